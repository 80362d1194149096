//! The checks that need the whole step list at once: dangling step references, `exit.send` naming a
//! send step, cycles, and steps that nothing reaches (SPEC §3).
//!
//! The parser records, while it reads each step, the step's id and every reference it makes together
//! with the reference's JSON pointer; this module only works on that record, so it can report a problem
//! at the exact reference that causes it even when other parts of the document failed to parse.

use super::Problem;
use std::collections::HashMap;

/// What the parser learnt about the step graph.
#[derive(Debug, Default)]
pub(super) struct Graph {
    /// One node per element of `steps`, in order, including elements that failed to parse.
    pub(crate) nodes: Vec<Node>,
    /// `exit.send`, when it is a string.
    pub(crate) exit_send: Option<Ref>,
    /// False when some reference could not be read (a `next` that is a number, a step that is not an
    /// object): reachability would then report steps that are only unreachable because of that earlier
    /// problem, so it is skipped until the document is fixed.
    pub(crate) complete: bool,
    /// False when `steps` itself is missing or not an array: every graph check would only repeat that.
    pub(crate) steps_known: bool,
}

#[derive(Debug, Default)]
pub(super) struct Node {
    /// The step's id, when it has a valid one.
    pub(crate) id: Option<String>,
    /// The id repeats an earlier step's id; references resolve to the earlier step.
    pub(crate) duplicate: bool,
    /// The step's `type`, when it is a known one.
    pub(crate) type_name: Option<&'static str>,
    /// Every non-null step reference the step makes, in document order.
    pub(crate) refs: Vec<Ref>,
}

/// One step reference: where it is in the document and which step id it names.
#[derive(Debug)]
pub(super) struct Ref {
    pub(crate) path: String,
    pub(crate) target: String,
}

pub(super) fn check(graph: &Graph, problems: &mut Vec<Problem>) {
    if !graph.steps_known {
        return;
    }
    let mut report = |path: &str, message: String| {
        problems.push(Problem {
            path: path.to_string(),
            message,
        })
    };

    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, node) in graph.nodes.iter().enumerate() {
        if let (Some(id), false) = (&node.id, node.duplicate) {
            index.entry(id.as_str()).or_insert(i);
        }
    }

    // Resolve every reference; a dangling one is reported here and left out of the graph.
    let mut dangling = false;
    let edges: Vec<Vec<(usize, &str)>> = graph
        .nodes
        .iter()
        .map(|node| {
            node.refs
                .iter()
                .filter_map(|r| match index.get(r.target.as_str()) {
                    Some(&to) => Some((to, r.path.as_str())),
                    None => {
                        report(&r.path, format!("unknown step \"{}\"", r.target));
                        dangling = true;
                        None
                    }
                })
                .collect()
        })
        .collect();

    let exit_step = graph
        .exit_send
        .as_ref()
        .and_then(|r| match index.get(r.target.as_str()) {
            None => {
                report(&r.path, format!("unknown step \"{}\"", r.target));
                dangling = true;
                None
            }
            Some(&to) => {
                // A step of unknown type already has its own problem; only a known, different type is news.
                if let Some(other) = graph.nodes[to].type_name.filter(|t| *t != "send") {
                    report(
                        &r.path,
                        format!(
                            "exit.send must name a send step, \"{}\" is a {other} step",
                            r.target
                        ),
                    );
                }
                // The exit send runs once, on exit, and goes nowhere after (SPEC §3.4).
                let is_send = graph.nodes[to].type_name == Some("send");
                for next in graph.nodes[to].refs.iter().filter(|_| is_send) {
                    report(
                        &next.path,
                        format!(
                            "\"{}\" is exit.send: it runs once on exit and goes nowhere, so its next must be null or absent",
                            r.target
                        ),
                    );
                }
                Some(to)
            }
        });

    // Cycles: a depth-first search from the first step, then the exit step, then every other step so
    // that cycles among unreachable steps are found too. An edge back to a step still on the search
    // path closes a cycle and is reported at that reference. Iterative, because `steps` may be far
    // longer than the 50 allowed (that is a problem too, but it must not overflow the stack).
    let n = graph.nodes.len();
    let mut state = vec![Visit::New; n];
    let roots = (!graph.nodes.is_empty())
        .then_some(0)
        .into_iter()
        .chain(exit_step)
        .chain(0..n);
    for root in roots {
        if state[root] != Visit::New {
            continue;
        }
        state[root] = Visit::OnPath;
        let mut stack = vec![(root, 0usize)];
        while let Some((node, next_edge)) = stack.last_mut() {
            let node = *node;
            match edges[node].get(*next_edge) {
                Some(&(to, path)) => {
                    *next_edge += 1;
                    match state[to] {
                        Visit::New => {
                            state[to] = Visit::OnPath;
                            stack.push((to, 0));
                        }
                        Visit::OnPath => {
                            let id = graph.nodes[to].id.as_deref().unwrap_or_default();
                            report(path, format!("cycle through step \"{id}\""));
                        }
                        Visit::Done => {}
                    }
                }
                None => {
                    state[node] = Visit::Done;
                    stack.pop();
                }
            }
        }
    }

    // A dangling reference was most likely meant for one of the steps that would now be called
    // unreachable (a typo such as "remindr"); those reports would only be echoes, so reachability is
    // judged once every reference resolves.
    if !graph.complete || dangling {
        return;
    }
    let mut reached = vec![false; n];
    let mut queue: Vec<usize> = (!graph.nodes.is_empty())
        .then_some(0)
        .into_iter()
        .chain(exit_step)
        .collect();
    while let Some(node) = queue.pop() {
        if !std::mem::replace(&mut reached[node], true) {
            queue.extend(edges[node].iter().map(|&(to, _)| to));
        }
    }
    for (i, node) in graph.nodes.iter().enumerate() {
        // Steps without a usable id, and duplicates, already carry a problem of their own.
        if let (Some(id), false, false) = (&node.id, node.duplicate, reached[i]) {
            report(&format!("/steps/{i}"), format!("unreachable step \"{id}\""));
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Visit {
    New,
    OnPath,
    Done,
}
