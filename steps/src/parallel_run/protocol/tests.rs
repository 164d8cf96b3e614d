use super::*;
use serde_json::json;

/// The JSON lines of the ```json blocks in the README's protocol section.
fn readme_examples() -> Vec<Value> {
    let readme = include_str!("../../../../README.md");
    let start = readme
        .find("### The worker protocol")
        .expect("the README has its protocol section");
    let section = &readme[start..];
    let section = &section[..section[4..].find("\n### ").map_or(section.len(), |e| e + 4)];
    let mut examples = Vec::new();
    let mut in_json = false;
    for line in section.lines().map(str::trim) {
        match line {
            "```json" => in_json = true,
            "```" => in_json = false,
            "" => {}
            _ if in_json => examples.push(
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("README example is not JSON ({e}): {line}")),
            ),
            _ => {}
        }
    }
    examples
}

#[test]
fn every_readme_example_is_a_request_or_a_reply_and_serialises_back_the_same() {
    let examples = readme_examples();
    let mut requests = BTreeMap::new();
    let mut replies = BTreeMap::new();
    for v in &examples {
        let kind = v["type"].as_str().unwrap_or_default().to_string();
        let request = Request::deserialize(v);
        let reply = Reply::deserialize(v);
        let back = match (request, reply) {
            (Ok(r), Err(_)) => {
                *requests.entry(kind).or_insert(0) += 1;
                serde_json::to_value(r)
            }
            (Err(_), Ok(r)) => {
                *replies.entry(kind).or_insert(0) += 1;
                serde_json::to_value(r)
            }
            (a, b) => panic!("{v} is not exactly one of request ({a:?}) or reply ({b:?})"),
        };
        assert_eq!(back.ok().as_ref(), Some(v), "{v} does not serialise back");
    }
    // Every message is documented (the b64 path and both run kinds included).
    let names = |m: &BTreeMap<String, i32>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&requests), ["init", "run", "shutdown"]);
    assert_eq!(
        names(&replies),
        [
            "bye",
            "error",
            "init_failed",
            "protocol_error",
            "ready",
            "result"
        ]
    );
    assert_eq!(
        requests["run"], 3,
        "a files, a tabular and a partitioned files run"
    );
    assert!(examples.iter().any(|v| v["files"][1]["b64"].is_string()));
}

#[test]
fn readme_examples_say_what_stepgraph_sends() {
    let examples = readme_examples();
    let find = |kind: &str| {
        examples
            .iter()
            .find(|v| v["type"] == "run" && v["kind"] == kind)
            .cloned()
    };
    let spec = MiniBatchSpec::Files {
        files: vec![
            PathBuf::from("/data/a.txt"),
            PathBuf::from(OsStr::from_bytes(b"/data/b\xff.txt")),
        ],
        partition_key_value: None,
        partitions: Vec::new(),
    };
    assert_eq!(
        serde_json::to_value(Request::Run(Run::new(7, &spec))).ok(),
        find("files")
    );
    let spec = MiniBatchSpec::Tabular {
        segments: vec![Segment {
            path: PathBuf::from("/data/x.csv"),
            format: TabularFormat::Csv,
            header_end: 12,
            ranges: vec![(12, 400), (880, 1024)],
        }],
        rows: 3,
        bytes: 532,
        partition_key_value: Some(BTreeMap::from([("region".into(), "eu".into())])),
        partitions: Vec::new(),
    };
    assert_eq!(
        serde_json::to_value(Request::Run(Run::new(8, &spec))).ok(),
        find("tabular")
    );
    let partitioned = examples
        .iter()
        .find(|v| v["type"] == "run" && v["kind"] == "files" && v["partitions"].is_array())
        .cloned();
    let values = PartitionValues::from([("user", "ana"), ("season", "summer"), ("genres", "jazz")]);
    let spec = MiniBatchSpec::Files {
        files: vec![PathBuf::from("/data/ana/summer/jazz.wav")],
        partition_key_value: Some(BTreeMap::from([
            ("user".into(), "ana".into()),
            ("genres".into(), "jazz".into()),
        ])),
        partitions: vec![values],
    };
    assert_eq!(
        serde_json::to_value(Request::Run(Run::new(9, &spec))).ok(),
        partitioned
    );
    let Some(Request::Init(init)) = examples.iter().find_map(|v| {
        Request::deserialize(v)
            .ok()
            .filter(|r| matches!(r, Request::Init(_)))
    }) else {
        panic!("no init example")
    };
    assert_eq!(init.protocol, PROTOCOL_VERSION);
    assert_eq!(init.max_line_bytes, MAX_PROTOCOL_LINE as u64);
}

#[test]
fn the_wire_format_is_the_one_workers_already_speak() {
    let shutdown = serde_json::to_value(Request::Shutdown).ok();
    assert_eq!(shutdown, Some(json!({"type": "shutdown"})));
    let spec = MiniBatchSpec::Tabular {
        segments: vec![],
        rows: 0,
        bytes: 0,
        partition_key_value: None,
        partitions: Vec::new(),
    };
    assert_eq!(
        serde_json::to_value(Request::Run(Run::new(3, &spec))).ok(),
        Some(
            json!({"type": "run", "index": 3, "kind": "tabular", "segments": [], "partition_key_value": null})
        )
    );
}

#[test]
fn replies_are_read_as_leniently_as_ever() {
    let reply = |line: &str| match parse_reply(line.as_bytes()) {
        Ok(Incoming::Reply(r)) => Some(r),
        _ => None,
    };
    assert_eq!(
        reply(r#"{"type":"ready","pid":"not a number","extra":1}"#),
        Some(Reply::Ready { pid: None })
    );
    assert_eq!(
        reply(r#"{"type":"error","index":2,"error":5}"#),
        Some(Reply::Error {
            index: 2,
            error: None
        })
    );
    assert_eq!(
        reply(r#"{"type":"result","index":1,"count":2,"rows":["a",{"b":1},3],"columns":"x"}"#),
        Some(Reply::Result(RunResult {
            index: 1,
            count: 2,
            rows: Some(vec![
                Text("a".into()),
                Text(r#"{"b":1}"#.into()),
                Text("3".into())
            ]),
            columns: None,
        }))
    );
    assert!(matches!(
        parse_reply(br#"{"type":"hello"}"#),
        Ok(Incoming::Other(_))
    ));
    assert_eq!(
        parse_reply(b"HEAD tail\n")
            .err()
            .map(|e| e.to_string())
            .as_deref(),
        Some("not a JSON line: HEAD tail")
    );
}

#[test]
fn a_bad_count_is_named_only_for_the_result_of_this_mini_batch() {
    let value = json!({"type": "result", "index": 4, "count": -1});
    let said = bad_count(&value, 4).unwrap_or_default();
    assert!(said.contains("mini-batch 4 has \"count\" -1"), "{said}");
    assert_eq!(bad_count(&value, 5), None, "a stale reply is skipped");
    let missing = json!({"type": "result", "index": 4});
    assert!(bad_count(&missing, 4).is_some_and(|s| s.contains("\"count\" none")));
    assert_eq!(bad_count(&json!({"type": "other", "index": 4}), 4), None);
}

#[test]
fn base64_matches_rfc_4648_vectors_both_ways() {
    let cases = [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ];
    for (plain, encoded) in cases {
        assert_eq!(base64(plain.as_bytes()), encoded);
        assert_eq!(unbase64(encoded).as_deref(), Some(plain.as_bytes()));
    }
    assert_eq!(base64(&[0xff, 0xfe, 0xfd]), "//79");
    for bad in ["Zg=", "Z===", "Zg==Zg==", "Zm9*"] {
        assert_eq!(unbase64(bad), None, "{bad}");
    }
}

#[test]
fn paths_keep_their_exact_bytes() {
    let raw = PathBuf::from(OsStr::from_bytes(b"/d/a\xff.txt"));
    let wire = serde_json::to_value(WirePath(raw.clone())).ok();
    assert_eq!(wire, Some(json!({ "b64": base64(b"/d/a\xff.txt") })));
    let back = wire.and_then(|w| WirePath::deserialize(w).ok());
    assert_eq!(back, Some(WirePath(raw)));
    assert_eq!(
        serde_json::to_value(WirePath(PathBuf::from("/d/b.txt"))).ok(),
        Some(json!("/d/b.txt"))
    );
}

#[test]
fn lines_are_read_up_to_the_limit_and_never_further() {
    let read = |input: &mut &[u8], want: LineRead, line: &[u8]| {
        let mut buf = Vec::new();
        assert_eq!(read_line(input, &mut buf, 5).ok(), Some(want));
        assert_eq!(buf, line);
    };
    let mut input: &[u8] = b"ok\n0123456789tail\nlast";
    read(&mut input, LineRead::Line, b"ok\n");
    // max + 1 bytes read, no more
    read(&mut input, LineRead::TooLong, b"012345");
    let mut input: &[u8] = b"12345\nabc";
    // exactly the limit plus its newline is fine
    read(&mut input, LineRead::Line, b"12345\n");
    read(&mut input, LineRead::Line, b"abc");
    read(&mut input, LineRead::Eof, b"");
}
