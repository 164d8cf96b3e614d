//! The graph a pipeline is built into: nodes (a step and the [`ModuleDef`] it declared), edges,
//! and the [`GraphBuilder`] a step writes its node into from `Step::create_node` (Azure's
//! `create_node(graph, default_datastore, context)`). Both `step.rs` and `pipeline.rs` use this
//! module; it uses neither (a node holds its step as any `S`, `dyn Step` in a pipeline).

use std::sync::Arc;

use petgraph::stable_graph::{NodeIndex, StableDiGraph};

use crate::module_def::ModuleDef;

/// A node: one step with its declaration.
pub struct Node<S: ?Sized> {
    /// The step's name (validated in `build`).
    pub name: String,
    /// What the step declared.
    pub module_def: ModuleDef,
    pub(crate) step: Arc<S>,
}

impl<S: ?Sized> Clone for Node<S> {
    fn clone(&self) -> Self {
        Node {
            name: self.name.clone(),
            module_def: self.module_def.clone(),
            step: self.step.clone(),
        }
    }
}

impl<S: ?Sized> std::fmt::Debug for Node<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.name)
            .field("module_def", &self.module_def)
            .finish_non_exhaustive()
    }
}

/// An edge of the graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edge {
    /// Data flows from an output port to an input port.
    Data {
        /// Producer's output port.
        from_port: String,
        /// Consumer's input port.
        to_port: String,
        /// The `PipelineData` name.
        data: String,
    },
    /// `run_after`: ordering without data.
    Sequence,
}

/// The graph under construction, handed to one step's `create_node`: the nodes it adds hold
/// that step.
pub struct GraphBuilder<'g, S: ?Sized> {
    graph: &'g mut StableDiGraph<Node<S>, Edge>,
    name: String,
    current: Arc<S>,
    added: Vec<NodeIndex>,
}

impl<'g, S: ?Sized> GraphBuilder<'g, S> {
    /// A builder adding nodes named `name`, holding `step`, to `graph`.
    pub(crate) fn new(
        graph: &'g mut StableDiGraph<Node<S>, Edge>,
        name: String,
        step: Arc<S>,
    ) -> Self {
        GraphBuilder {
            graph,
            name,
            current: step,
            added: Vec::new(),
        }
    }

    /// The nodes added so far, in order.
    pub(crate) fn added(&self) -> &[NodeIndex] {
        &self.added
    }

    /// Add a node for the step being built, holding `def`.
    pub fn add_node(&mut self, def: ModuleDef) -> NodeIndex {
        let idx = self.graph.add_node(Node {
            name: self.name.clone(),
            module_def: def,
            step: self.current.clone(),
        });
        self.added.push(idx);
        idx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_added_hold_the_current_step_and_its_name() {
        let mut graph = StableDiGraph::<Node<str>, Edge>::new();
        let step: Arc<str> = Arc::from("the step");
        let mut gb = GraphBuilder::new(&mut graph, "a".into(), step);
        let i = gb.add_node(ModuleDef::builder("Test").build());
        assert_eq!(gb.added(), &[i]);
        assert_eq!(graph[i].name, "a");
        assert_eq!(&*graph[i].step, "the step");
    }
}
