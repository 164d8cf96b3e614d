//! Building a pipeline: steps declare `ModuleDef`s, the builder validates the WHOLE graph and
//! reports every problem at once, and only the frozen [`Pipeline`] can be planned or run.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::{EdgeRef, IntoEdgeReferences};
use petgraph::Direction;
use serde_json::Value;

use crate::data::{DataSource, InputRole, PipelineParameter};
use crate::error::{BuildError, BuildErrors};
use crate::graph::{Edge, GraphBuilder, Node};
use crate::model::{GraphSnapshot, SnapshotDataEdge, SnapshotEdge, SnapshotNode, SnapshotPort};
use crate::module_def::{Argument, ModuleDef};
use crate::name::{check_data_name, StepName};
use crate::step::{BuildContext, Datastore, Step};

/// The graph of a pipeline: its steps and the data and sequencing edges between them.
pub type StepGraph = StableDiGraph<Node<dyn Step>, Edge>;

/// Collects steps; [`PipelineBuilder::build`] validates and freezes them.
pub struct PipelineBuilder {
    name: String,
    steps: Vec<Arc<dyn Step>>,
    parameters: Vec<PipelineParameter>,
}

impl PipelineBuilder {
    /// A builder for a pipeline called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        PipelineBuilder {
            name: name.into(),
            steps: Vec::new(),
            parameters: Vec::new(),
        }
    }

    /// Add a step.
    pub fn step(mut self, step: impl Step + 'static) -> Self {
        self.steps.push(Arc::new(step));
        self
    }

    /// Add a shared step.
    pub fn add_step(&mut self, step: Arc<dyn Step>) -> &mut Self {
        self.steps.push(step);
        self
    }

    /// Declare a pipeline parameter even if no step reads it yet.
    pub fn parameter(mut self, p: PipelineParameter) -> Self {
        self.parameters.push(p);
        self
    }

    /// Declare a parameter (by reference).
    pub fn add_parameter(&mut self, p: PipelineParameter) -> &mut Self {
        self.parameters.push(p);
        self
    }

    /// Validate the whole graph and freeze it.
    ///
    /// # Errors
    /// Every problem found: bad or duplicate names, dangling references, data with zero or
    /// several producers, cycles (as their full chain), invalid step configuration.
    pub fn build(self) -> Result<Pipeline, BuildErrors> {
        let mut errors = Vec::new();
        if let Some(reason) = crate::name::check_pipeline_name(&self.name) {
            errors.push(BuildError::InvalidPipelineName {
                name: self.name.clone(),
                reason,
            });
        }
        let (mut graph, by_name) = self.add_nodes(&mut errors);
        // Ports, parameters and argument references.
        let mut params: BTreeMap<String, PipelineParameter> = BTreeMap::new();
        for p in &self.parameters {
            params.insert(p.name.clone(), p.clone());
        }
        for idx in graph.node_indices() {
            check_node(&graph[idx], &mut params, &mut errors);
        }
        let producers = producers(&graph, &mut errors);
        // Data and sequencing edges.
        let mut new_edges = Vec::new();
        for idx in graph.node_indices() {
            new_edges.extend(node_edges(&graph, idx, &producers, &by_name, &mut errors));
        }
        for (a, b, e) in new_edges {
            graph.add_edge(a, b, e);
        }
        let order = match topological_order(&graph) {
            Ok(order) => order,
            Err(cycles) => {
                errors.extend(cycles);
                Vec::new()
            }
        };
        if !errors.is_empty() {
            return Err(BuildErrors(errors));
        }
        Ok(Pipeline {
            name: self.name,
            graph,
            order,
            by_name,
            parameters: params,
        })
    }

    /// Let every step add its node (Azure's `create_node`); step names are checked here.
    fn add_nodes(&self, errors: &mut Vec<BuildError>) -> (StepGraph, HashMap<String, NodeIndex>) {
        let context = BuildContext {
            pipeline: self.name.clone(),
        };
        let datastore = Datastore {
            name: "workspaceblobstore".into(),
        };
        let mut graph = StepGraph::default();
        let mut by_name: HashMap<String, NodeIndex> = HashMap::new();
        for step in &self.steps {
            let name = step.name().to_string();
            if by_name.contains_key(&name) {
                if !errors.contains(&BuildError::DuplicateStepName { step: name.clone() }) {
                    errors.push(BuildError::DuplicateStepName { step: name.clone() });
                }
                continue;
            }
            // Checked once per name: a repeated bad name is one InvalidStepName, not several.
            if let Err(e) = StepName::new(&name) {
                errors.push(e);
            }
            let mut gb = GraphBuilder::new(&mut graph, name.clone(), step.clone());
            match step.create_node(&mut gb, &datastore, &context) {
                Ok(()) => {
                    if let Some(idx) = gb.added().first() {
                        by_name.insert(name, *idx);
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        (graph, by_name)
    }
}

/// Check one node's names, ports and argument references, and merge the parameters it
/// declares into `params` (one default per name).
fn check_node(
    node: &Node<dyn Step>,
    params: &mut BTreeMap<String, PipelineParameter>,
    errors: &mut Vec<BuildError>,
) {
    let def = &node.module_def;
    check_path_names(&node.name, def, errors);
    let mut ports = BTreeSet::new();
    for port in def
        .inputs
        .iter()
        .map(|i| &i.name)
        .chain(def.outputs.iter().map(|o| &o.name))
    {
        if !ports.insert(port.clone()) {
            errors.push(BuildError::DuplicatePort {
                step: node.name.clone(),
                port: port.clone(),
            });
        }
    }
    for a in &def.arguments {
        let (what, port, exists) = match a {
            Argument::Input(p) => ("input port", p, def.inputs.iter().any(|i| &i.name == p)),
            Argument::Output(p) => ("output port", p, def.outputs.iter().any(|o| &o.name == p)),
            _ => continue,
        };
        if !exists {
            errors.push(BuildError::UnknownReference {
                step: node.name.clone(),
                field: "arguments".into(),
                what: what.into(),
                name: port.clone(),
            });
        }
    }
    for p in def.parameters() {
        match params.get(&p.name) {
            Some(q) if q.default_value != p.default_value => {
                let e = BuildError::ConflictingParameter {
                    name: p.name.clone(),
                };
                if !errors.contains(&e) {
                    errors.push(e);
                }
            }
            Some(_) => {}
            None => {
                params.insert(p.name.clone(), p.clone());
            }
        }
    }
}

/// The producers (node, output port) of each `PipelineData`; more than one is an error.
fn producers(
    graph: &StepGraph,
    errors: &mut Vec<BuildError>,
) -> BTreeMap<String, Vec<(NodeIndex, String)>> {
    let mut producers: BTreeMap<String, Vec<(NodeIndex, String)>> = BTreeMap::new();
    for idx in graph.node_indices() {
        for o in &graph[idx].module_def.outputs {
            producers
                .entry(o.data.name().to_string())
                .or_default()
                .push((idx, o.name.clone()));
        }
    }
    for (data, prods) in &producers {
        if prods.len() > 1 {
            let mut steps: Vec<String> =
                prods.iter().map(|(i, _)| graph[*i].name.clone()).collect();
            steps.sort();
            errors.push(BuildError::MultipleProducers {
                data: data.clone(),
                steps,
            });
        }
    }
    producers
}

/// The edges into node `idx`: from the producer of each pipeline-data input, and from each
/// step it runs after.
fn node_edges(
    graph: &StepGraph,
    idx: NodeIndex,
    producers: &BTreeMap<String, Vec<(NodeIndex, String)>>,
    by_name: &HashMap<String, NodeIndex>,
    errors: &mut Vec<BuildError>,
) -> Vec<(NodeIndex, NodeIndex, Edge)> {
    let node = &graph[idx];
    let mut edges = Vec::new();
    for input in &node.module_def.inputs {
        if let DataSource::Pipeline(d) = &input.source {
            match producers.get(d.name()).and_then(|p| p.first()) {
                Some((from, from_port)) => edges.push((
                    *from,
                    idx,
                    Edge::Data {
                        from_port: from_port.clone(),
                        to_port: input.name.clone(),
                        data: d.name().to_string(),
                    },
                )),
                None => errors.push(BuildError::NoProducer {
                    step: node.name.clone(),
                    port: input.name.clone(),
                    data: d.name().to_string(),
                }),
            }
        }
    }
    for after in &node.module_def.run_after {
        // Azure's sequencing ports: a step without them can be neither ordered after another
        // step nor have one ordered after it.
        let no_ports = |n: &Node<dyn Step>| !n.module_def.create_sequencing_ports;
        match by_name.get(after) {
            Some(from) if no_ports(node) || no_ports(&graph[*from]) => {
                let without = if no_ports(node) { &node.name } else { after };
                errors.push(BuildError::NoSequencingPorts {
                    step: node.name.clone(),
                    after: after.clone(),
                    without: without.clone(),
                });
            }
            Some(from) => edges.push((*from, idx, Edge::Sequence)),
            None => errors.push(BuildError::UnknownStep {
                step: node.name.clone(),
                field: "run_after".into(),
                name: after.clone(),
            }),
        }
    }
    edges
}

/// Every name of `def` that becomes a path component (ports, data and dataset names) must pass
/// the name rule; each bad name is reported once per step.
fn check_path_names(step: &str, def: &ModuleDef, errors: &mut Vec<BuildError>) {
    let mut names: Vec<(&str, &str)> = Vec::new();
    for i in &def.inputs {
        let port = match i.role {
            InputRole::Main => "input port",
            InputRole::Side => "side input port",
        };
        names.push((port, &i.name));
        names.push((i.source.kind_noun(), i.source.name()));
    }
    for o in &def.outputs {
        names.push(("output port", &o.name));
        names.push(("output data", o.data.name()));
    }
    let mut seen = BTreeSet::new();
    for (field, name) in names {
        if let Some(reason) = check_data_name(name) {
            if seen.insert(name) {
                errors.push(BuildError::InvalidName {
                    step: step.to_string(),
                    field: field.to_string(),
                    name: name.to_string(),
                    reason: reason.to_string(),
                });
            }
        }
    }
}

/// Kahn's algorithm with ties broken by step name, so the order is the same however the
/// steps were inserted. On a cycle, every cycle is reported as its full chain.
fn topological_order(graph: &StepGraph) -> Result<Vec<NodeIndex>, Vec<BuildError>> {
    let mut indegree: HashMap<NodeIndex, usize> = graph
        .node_indices()
        .map(|n| (n, graph.neighbors_directed(n, Direction::Incoming).count()))
        .collect();
    let mut ready: BTreeSet<(String, NodeIndex)> = indegree
        .iter()
        .filter(|(_, d)| **d == 0)
        .map(|(n, _)| (graph[*n].name.clone(), *n))
        .collect();
    let mut order = Vec::with_capacity(indegree.len());
    while let Some(first) = ready.iter().next().cloned() {
        ready.remove(&first);
        let n = first.1;
        order.push(n);
        for e in graph.edges_directed(n, Direction::Outgoing) {
            if let Some(d) = indegree.get_mut(&e.target()) {
                *d -= 1;
                if *d == 0 {
                    ready.insert((graph[e.target()].name.clone(), e.target()));
                }
            }
        }
    }
    if order.len() == graph.node_count() {
        return Ok(order);
    }
    let mut errors = Vec::new();
    for scc in petgraph::algo::tarjan_scc(graph) {
        let cyclic = scc.len() > 1 || scc.first().is_some_and(|n| graph.contains_edge(*n, *n));
        if cyclic {
            errors.push(BuildError::Cycle {
                steps: cycle_chain(graph, &scc),
            });
        }
    }
    Err(errors)
}

/// One cycle through a strongly connected component, starting at its smallest name:
/// `a -> b -> c -> a`.
fn cycle_chain(graph: &StepGraph, scc: &[NodeIndex]) -> Vec<String> {
    let members: BTreeSet<NodeIndex> = scc.iter().copied().collect();
    let Some(start) = scc.iter().min_by_key(|n| graph[**n].name.clone()).copied() else {
        return Vec::new();
    };
    // Breadth-first search inside the component for the shortest way back to `start`.
    let mut prev: HashMap<NodeIndex, NodeIndex> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    let mut found = None;
    while let Some(n) = queue.pop_front() {
        let mut next: Vec<NodeIndex> = graph
            .neighbors_directed(n, Direction::Outgoing)
            .filter(|m| members.contains(m))
            .collect();
        next.sort_by_key(|m| graph[*m].name.clone());
        for m in next {
            if m == start {
                found = Some(n);
                break;
            }
            if let std::collections::hash_map::Entry::Vacant(e) = prev.entry(m) {
                e.insert(n);
                queue.push_back(m);
            }
        }
        if found.is_some() {
            break;
        }
    }
    let mut chain = Vec::new();
    let mut cur = found.unwrap_or(start);
    while cur != start {
        chain.push(graph[cur].name.clone());
        cur = prev.get(&cur).copied().unwrap_or(start);
    }
    chain.push(graph[start].name.clone());
    chain.reverse();
    chain.push(graph[start].name.clone());
    chain
}

/// A validated, frozen pipeline.
#[derive(Debug, Clone)]
pub struct Pipeline {
    name: String,
    graph: StepGraph,
    order: Vec<NodeIndex>,
    by_name: HashMap<String, NodeIndex>,
    parameters: BTreeMap<String, PipelineParameter>,
}

impl Pipeline {
    /// Start building a pipeline called `name`.
    pub fn builder(name: impl Into<String>) -> PipelineBuilder {
        PipelineBuilder::new(name)
    }

    /// The pipeline's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The graph.
    pub fn graph(&self) -> &StepGraph {
        &self.graph
    }

    /// Node indices in topological order (ties broken by name).
    pub fn topological_order(&self) -> &[NodeIndex] {
        &self.order
    }

    /// The node of step `name`.
    pub fn node_index(&self, name: &str) -> Option<NodeIndex> {
        self.by_name.get(name).copied()
    }

    /// The node at `idx`.
    pub fn node(&self, idx: NodeIndex) -> &Node<dyn Step> {
        &self.graph[idx]
    }

    /// Step names in topological order.
    pub fn step_names(&self) -> Vec<&str> {
        self.order
            .iter()
            .map(|i| self.graph[*i].name.as_str())
            .collect()
    }

    /// Declared parameters and defaults.
    pub fn parameters(&self) -> &BTreeMap<String, PipelineParameter> {
        &self.parameters
    }

    /// Parameter values for a run: defaults overridden by `overrides`.
    ///
    /// # Errors
    /// [`crate::EngineError::UnknownParameter`] for an override no step declares.
    pub fn resolve_params(
        &self,
        overrides: &BTreeMap<String, Value>,
    ) -> Result<BTreeMap<String, Value>, crate::EngineError> {
        let mut out: BTreeMap<String, Value> = self
            .parameters
            .iter()
            .map(|(k, p)| (k.clone(), p.default_value.clone()))
            .collect();
        for (k, v) in overrides {
            if !out.contains_key(k) {
                return Err(crate::EngineError::UnknownParameter {
                    name: k.clone(),
                    known: self
                        .parameters
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            out.insert(k.clone(), v.clone());
        }
        Ok(out)
    }

    /// Upstream steps of `idx` (data and sequencing).
    pub fn parents(&self, idx: NodeIndex) -> Vec<NodeIndex> {
        let mut p: Vec<NodeIndex> = self
            .graph
            .neighbors_directed(idx, Direction::Incoming)
            .collect();
        p.sort();
        p.dedup();
        p
    }

    /// Every step downstream of `idx`.
    pub fn descendants(&self, idx: NodeIndex) -> BTreeSet<NodeIndex> {
        let mut out = BTreeSet::new();
        let mut stack = vec![idx];
        while let Some(n) = stack.pop() {
            for m in self.graph.neighbors_directed(n, Direction::Outgoing) {
                if out.insert(m) {
                    stack.push(m);
                }
            }
        }
        out
    }

    /// The data edge feeding input `port` of `idx`, as (producer, producer's output port).
    pub fn producer_of(&self, idx: NodeIndex, port: &str) -> Option<(NodeIndex, &str)> {
        self.graph
            .edges_directed(idx, Direction::Incoming)
            .find_map(|e| match e.weight() {
                Edge::Data {
                    from_port, to_port, ..
                } if to_port == port => Some((e.source(), from_port.as_str())),
                _ => None,
            })
    }

    /// A serializable snapshot (stored with each run; rendered by `graph`).
    pub fn snapshot(&self) -> GraphSnapshot {
        let nodes = self
            .order
            .iter()
            .map(|i| {
                let n = &self.graph[*i];
                SnapshotNode {
                    name: n.name.clone(),
                    execution_type: n.module_def.execution_type.clone(),
                    allow_reuse: n.module_def.allow_reuse,
                    inputs: n
                        .module_def
                        .inputs
                        .iter()
                        .map(|b| SnapshotPort {
                            port: b.name.clone(),
                            data: b.source.name().to_string(),
                            kind: b.source.kind().to_string(),
                            role: match b.role {
                                InputRole::Main => "main".into(),
                                InputRole::Side => "side".into(),
                            },
                        })
                        .collect(),
                    outputs: n
                        .module_def
                        .outputs
                        .iter()
                        .map(|o| SnapshotPort {
                            port: o.name.clone(),
                            data: o.data.name().to_string(),
                            kind: "output".into(),
                            role: String::new(),
                        })
                        .collect(),
                }
            })
            .collect();
        let mut edges: Vec<SnapshotEdge> = (&self.graph)
            .edge_references()
            .map(|e| SnapshotEdge {
                from: self.graph[e.source()].name.clone(),
                to: self.graph[e.target()].name.clone(),
                data: match e.weight() {
                    Edge::Data {
                        from_port,
                        to_port,
                        data,
                    } => Some(SnapshotDataEdge {
                        from_port: from_port.clone(),
                        to_port: to_port.clone(),
                        data: data.clone(),
                    }),
                    Edge::Sequence => None,
                },
            })
            .collect();
        edges.sort_by(|a, b| (&a.from, &a.to).cmp(&(&b.from, &b.to)));
        GraphSnapshot {
            pipeline: self.name.clone(),
            nodes,
            edges,
            parameters: self
                .parameters
                .iter()
                .map(|(k, p)| (k.clone(), p.default_value.clone()))
                .collect(),
        }
    }
}
