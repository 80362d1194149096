//! How the console draws a journey (SPEC §7): a layered (Sugiyama-style) layout of its steps,
//! computed here so that every browser draws the same picture and the "no overlapping boxes, no
//! crossing labels" rule is checked by unit tests without one. Pure: a [`Journey`] in, boxes and
//! edge routes in pixels out.
//!
//! The graph: an *entry* node (the trigger event), an *exit* node when `exit.send` is set, a box per
//! step, and a small *end* node for each way an instance completes (a `next` of `null`). Edges are
//! `next`, each branch, timeouts and `else`; a hold branch with `reset_timer` loops back onto its own
//! step and is listed inside the box instead of drawn.
//!
//! The steps of the method:
//! 1. **Ranks** by longest path from the sources (the graph is a DAG: validation guarantees it).
//! 2. **Layers**: rank `r` is layer `2r`; every edge passes through each layer between its ends on
//!    a virtual node, and a labelled edge's first virtual node (right below its source) *is* its
//!    label, so labels are laid out like boxes and can overlap neither boxes nor each other.
//! 3. **Order** within layers: depth-first order from the entry, then barycentric sweeps down and
//!    up, keeping the order with the fewest crossings.
//! 4. **x**: each node wants the mean x of its neighbours; each layer then takes the positions
//!    closest to those wishes that keep the order and the minimum gaps (an isotonic regression,
//!    solved exactly by pool-adjacent-violators), so boxes never overlap by construction.
//! 5. **y**: layers stack, each as tall as its tallest node; edges are polylines through their
//!    virtual nodes, drawn by the browser as curves between layers.
//!
//! Text widths are estimates (the browser truncates with an ellipsis what does not fit, and shows
//! the whole text on hover and to screen readers).

use std::collections::HashMap;

use crate::journey::{Journey, StepKind};

/// A laid-out journey: every node and edge, in pixels, within `width` × `height`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Layout {
    pub(crate) width: f64,
    pub(crate) height: f64,
    pub(crate) nodes: Vec<Node>,
    pub(crate) edges: Vec<Edge>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Rect {
    pub(crate) x: f64,
    pub(crate) y: f64,
    pub(crate) w: f64,
    pub(crate) h: f64,
}

#[cfg(test)]
impl Rect {
    /// Do the two rectangles share any area?
    pub(crate) fn overlaps(&self, o: &Rect) -> bool {
        self.x < o.x + o.w && o.x < self.x + self.w && self.y < o.y + o.h && o.y < self.y + self.h
    }
}

/// What a node stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NodeKind {
    Entry,
    Exit,
    End,
    /// A step, by its type (`hold_until`, `delay`, `split`, `random_split`, `send`).
    Step(&'static str),
}

impl NodeKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            NodeKind::Entry => "entry",
            NodeKind::Exit => "exit",
            NodeKind::End => "end",
            NodeKind::Step(t) => t,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    /// The step id for steps; `@entry`, `@exit`, `@end<n>` otherwise (a step id has no `@`).
    pub(crate) id: String,
    pub(crate) kind: NodeKind,
    pub(crate) title: String,
    pub(crate) detail: String,
    /// Hold branches that restart the hold (`reset_timer`): their stats labels.
    pub(crate) loops: Vec<String>,
    pub(crate) rect: Rect,
}

/// What an edge stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EdgeKind {
    Entry,
    Exit,
    Next,
    Branch,
    Timeout,
    Else,
}

impl EdgeKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EdgeKind::Entry => "entry",
            EdgeKind::Exit => "exit",
            EdgeKind::Next => "next",
            EdgeKind::Branch => "branch",
            EdgeKind::Timeout => "timeout",
            EdgeKind::Else => "else",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Edge {
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) kind: EdgeKind,
    /// The key its count has in the stats' `branches[from]` (a branch, `timeout`, `else`).
    pub(crate) branch: Option<String>,
    /// The text shown on the edge (for a random split, with its percent).
    pub(crate) label: Option<String>,
    /// Where the label sits.
    pub(crate) label_rect: Option<Rect>,
    /// From the source's bottom to the target's top: straight where x stays the same, else a
    /// curve between two layers.
    pub(crate) points: Vec<(f64, f64)>,
}

/// Estimated width of one character of box text (13 px sans-serif, semibold titles; generous).
const CHAR_W: f64 = 8.0;
/// Estimated width of one character of label text (12 px).
const LABEL_CHAR_W: f64 = 6.8;
/// Wide enough for "reached 1,234 · active 1,234".
const BOX_MIN_W: f64 = 200.0;
const BOX_MAX_W: f64 = 260.0;
/// Title, detail and counts lines with padding; each loop adds a line.
const BOX_H: f64 = 70.0;
const LOOP_LINE_H: f64 = 18.0;
const END_W: f64 = 56.0;
const END_H: f64 = 26.0;
const LABEL_H: f64 = 22.0;
const LABEL_MIN_W: f64 = 64.0;
const LABEL_MAX_W: f64 = 200.0;
/// Room for a count beside the label text.
const LABEL_COUNT_W: f64 = 44.0;
/// A line passing through a layer takes this much room.
const DUMMY_W: f64 = 10.0;
/// Horizontal gap between two nodes (boxes or labels) of a layer; half that next to a line.
const GAP_X: f64 = 28.0;
/// Vertical gap between two layers, where edges curve.
const GAP_Y: f64 = 20.0;
const MARGIN: f64 = 16.0;

/// One node of the layered graph: a real node or an edge's virtual node (label or line).
#[derive(Debug, Clone)]
struct Vertex {
    w: f64,
    h: f64,
    layer: usize,
    /// `Some(edge index)` for virtual nodes.
    edge: Option<usize>,
    x: f64,
}

/// Lays out a journey.
pub(crate) fn layout(journey: &Journey) -> Layout {
    let (mut nodes, edges) = graph(journey);
    let index: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();
    let ends: Vec<(usize, usize)> = edges
        .iter()
        .map(|e| (index[e.from.as_str()], index[e.to.as_str()]))
        .collect();

    // 1. Ranks: longest path from the sources, in topological order.
    let n = nodes.len();
    let mut indegree = vec![0usize; n];
    for &(_, t) in &ends {
        indegree[t] += 1;
    }
    let mut rank = vec![0usize; n];
    let mut ready: Vec<usize> = (0..n).filter(|&v| indegree[v] == 0).collect();
    ready.reverse();
    while let Some(v) = ready.pop() {
        for &(s, t) in &ends {
            if s == v {
                rank[t] = rank[t].max(rank[v] + 1);
                indegree[t] -= 1;
                if indegree[t] == 0 {
                    ready.push(t);
                }
            }
        }
    }

    // 2. Layers, with a virtual node for every layer an edge passes through; the first is its
    // label when it has one.
    let mut vertices: Vec<Vertex> = nodes
        .iter()
        .enumerate()
        .map(|(i, node)| Vertex {
            w: node.rect.w,
            h: node.rect.h,
            layer: 2 * rank[i],
            edge: None,
            x: 0.0,
        })
        .collect();
    // The chain of vertices each edge goes through, its ends included.
    let mut chains: Vec<Vec<usize>> = Vec::with_capacity(edges.len());
    for (e, &(s, t)) in ends.iter().enumerate() {
        let mut chain = vec![s];
        for layer in vertices[s].layer + 1..vertices[t].layer {
            let labelled = layer == vertices[s].layer + 1 && edges[e].label.is_some();
            let (w, h) = if labelled {
                (
                    label_width(edges[e].label.as_deref().unwrap_or("")),
                    LABEL_H,
                )
            } else {
                (DUMMY_W, 0.0)
            };
            vertices.push(Vertex {
                w,
                h,
                layer,
                edge: Some(e),
                x: 0.0,
            });
            chain.push(vertices.len() - 1);
        }
        chain.push(t);
        chains.push(chain);
    }
    let layer_count = vertices.iter().map(|v| v.layer).max().unwrap_or(0) + 1;
    // Adjacent vertices one layer apart: (upper, lower).
    let links: Vec<(usize, usize)> = chains
        .iter()
        .flat_map(|c| c.windows(2).map(|w| (w[0], w[1])))
        .collect();
    let mut up: Vec<Vec<usize>> = vec![Vec::new(); vertices.len()];
    let mut down: Vec<Vec<usize>> = vec![Vec::new(); vertices.len()];
    for &(a, b) in &links {
        down[a].push(b);
        up[b].push(a);
    }

    // 3. Order: depth-first from the sources, each node's edges in definition order.
    let mut layers: Vec<Vec<usize>> = vec![Vec::new(); layer_count];
    let mut placed = vec![false; vertices.len()];
    let mut stack: Vec<usize> = (0..n).filter(|&v| up[v].is_empty()).rev().collect();
    while let Some(v) = stack.pop() {
        if placed[v] {
            continue;
        }
        placed[v] = true;
        layers[vertices[v].layer].push(v);
        for &w in down[v].iter().rev() {
            if !placed[w] {
                stack.push(w);
            }
        }
    }
    for (v, vertex) in vertices.iter().enumerate() {
        if !placed[v] {
            layers[vertex.layer].push(v);
        }
    }
    let layers = order(layers, &up, &down, vertices.len());

    // 4. x: start packed, then move each node towards its neighbours, layer by layer.
    let mut x = vec![0.0; vertices.len()];
    for layer in &layers {
        let want: Vec<f64> = vec![0.0; layer.len()];
        place(layer, &want, &vertices, &mut x);
    }
    let sweep = |x: &mut Vec<f64>, layer: &Vec<usize>, towards: &[&Vec<Vec<usize>>]| {
        let want: Vec<f64> = layer
            .iter()
            .map(|&v| {
                let near: Vec<f64> = towards
                    .iter()
                    .flat_map(|adj| adj[v].iter().map(|&u| x[u]))
                    .collect();
                if near.is_empty() {
                    x[v]
                } else {
                    near.iter().sum::<f64>() / near.len() as f64
                }
            })
            .collect();
        place(layer, &want, &vertices, x);
    };
    for _ in 0..8 {
        for layer in layers.iter().skip(1) {
            sweep(&mut x, layer, &[&up]);
        }
        for layer in layers.iter().rev().skip(1) {
            sweep(&mut x, layer, &[&down]);
        }
    }
    for _ in 0..4 {
        for layer in &layers {
            sweep(&mut x, layer, &[&up, &down]);
        }
    }
    let min_x = vertices
        .iter()
        .enumerate()
        .map(|(v, vx)| x[v] - vx.w / 2.0)
        .fold(f64::INFINITY, f64::min);
    for (v, vertex) in vertices.iter_mut().enumerate() {
        vertex.x = x[v] - min_x + MARGIN;
    }
    let width = vertices.iter().map(|v| v.x + v.w / 2.0).fold(0.0, f64::max) + MARGIN;

    // 5. y: layers stack; a layer that only lines pass through takes no height.
    let mut layer_y = vec![0.0; layer_count];
    let mut layer_h = vec![0.0f64; layer_count];
    for v in &vertices {
        layer_h[v.layer] = layer_h[v.layer].max(v.h);
    }
    let mut y = MARGIN;
    for l in 0..layer_count {
        layer_y[l] = y;
        y += layer_h[l] + GAP_Y;
    }
    let height = y - GAP_Y + MARGIN;

    for (i, node) in nodes.iter_mut().enumerate() {
        let v = &vertices[i];
        node.rect.x = v.x - v.w / 2.0;
        node.rect.y = layer_y[v.layer];
    }
    // Ports: a node's outgoing edges leave its bottom spread out in the order of what they lead
    // to; incoming edges arrive at its top likewise.
    let position: HashMap<usize, usize> = layers
        .iter()
        .flat_map(|l| l.iter().enumerate().map(|(p, &v)| (v, p)))
        .collect();
    let port = |v: usize, neighbours: &[usize], which: usize| -> f64 {
        let mut sorted: Vec<usize> = neighbours.to_vec();
        sorted.sort_by_key(|u| position[u]);
        sorted.dedup();
        let rank = sorted.iter().position(|&u| u == which).unwrap_or(0);
        let slots = sorted.len() as f64;
        let usable = (vertices[v].w - 40.0).max(0.0).min(48.0 * (slots - 1.0));
        vertices[v].x - usable / 2.0 + usable * rank as f64 / (slots - 1.0).max(1.0)
    };
    let mut laid: Vec<Edge> = edges;
    for (e, chain) in chains.iter().enumerate() {
        let (s, t) = (chain[0], chain[chain.len() - 1]);
        let mut points = Vec::new();
        let sx = port(s, &down[s], chain[1]);
        let src = &nodes[s].rect;
        points.push((sx, src.y + src.h));
        let layer_bottom = layer_y[vertices[s].layer] + layer_h[vertices[s].layer];
        if layer_bottom > src.y + src.h {
            points.push((sx, layer_bottom));
        }
        for &v in &chain[1..chain.len() - 1] {
            let l = vertices[v].layer;
            points.push((vertices[v].x, layer_y[l]));
            points.push((vertices[v].x, layer_y[l] + layer_h[l]));
            if vertices[v].h > 0.0 && laid[e].label_rect.is_none() {
                laid[e].label_rect = Some(Rect {
                    x: vertices[v].x - vertices[v].w / 2.0,
                    y: layer_y[l] + (layer_h[l] - vertices[v].h) / 2.0,
                    w: vertices[v].w,
                    h: vertices[v].h,
                });
            }
        }
        let tx = port(t, &up[t], chain[chain.len() - 2]);
        points.push((tx, nodes[t].rect.y));
        points.dedup();
        laid[e].points = points;
    }
    Layout {
        width,
        height,
        nodes,
        edges: laid,
    }
}

/// Reorders the layers by barycentric sweeps, keeping the order with the fewest crossings.
fn order(
    mut layers: Vec<Vec<usize>>,
    up: &[Vec<usize>],
    down: &[Vec<usize>],
    count: usize,
) -> Vec<Vec<usize>> {
    let mut pos = vec![0.0f64; count];
    let index = |layers: &Vec<Vec<usize>>, pos: &mut Vec<f64>| {
        for layer in layers {
            for (p, &v) in layer.iter().enumerate() {
                pos[v] = p as f64;
            }
        }
    };
    index(&layers, &mut pos);
    let mut best = layers.clone();
    let mut best_crossings = crossings(&layers, down, &pos);
    for round in 0..12 {
        let downward = round % 2 == 0;
        let sequence: Vec<usize> = if downward {
            (1..layers.len()).collect()
        } else {
            (0..layers.len().saturating_sub(1)).rev().collect()
        };
        for l in sequence {
            let adj = if downward { up } else { down };
            let mut keyed: Vec<(f64, usize)> = layers[l]
                .iter()
                .map(|&v| {
                    let near = &adj[v];
                    let key = if near.is_empty() {
                        pos[v]
                    } else {
                        near.iter().map(|&u| pos[u]).sum::<f64>() / near.len() as f64
                    };
                    (key, v)
                })
                .collect();
            // Stable: ties keep their current order.
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
            layers[l] = keyed.into_iter().map(|(_, v)| v).collect();
            for (p, &v) in layers[l].iter().enumerate() {
                pos[v] = p as f64;
            }
        }
        let c = crossings(&layers, down, &pos);
        if c < best_crossings {
            best_crossings = c;
            best = layers.clone();
        }
        if best_crossings == 0 {
            break;
        }
    }
    best
}

/// Edge crossings between adjacent layers: inversions among the links, counted with a Fenwick tree.
fn crossings(layers: &[Vec<usize>], down: &[Vec<usize>], pos: &[f64]) -> usize {
    let mut total = 0;
    for pair in layers.windows(2) {
        let mut links: Vec<(usize, usize)> = pair[0]
            .iter()
            .flat_map(|&a| {
                down[a]
                    .iter()
                    .map(move |&b| (pos[a] as usize, pos[b] as usize))
            })
            .collect();
        links.sort_unstable();
        let size = pair[1].len() + 1;
        let mut tree = vec![0usize; size + 1];
        for (seen, &(_, b)) in links.iter().enumerate() {
            // Links seen so far that end right of b cross this one.
            let mut i = b + 1;
            let mut not_greater = 0;
            while i > 0 {
                not_greater += tree[i];
                i &= i - 1;
            }
            total += seen - not_greater;
            let mut i = b + 1;
            while i <= size {
                tree[i] += 1;
                i += i & i.wrapping_neg();
            }
        }
    }
    total
}

/// Places one layer: the centres closest (least squares) to `want` that keep the layer's order
/// and every gap, by pool-adjacent-violators over `x - offset`.
fn place(layer: &[usize], want: &[f64], vertices: &[Vertex], x: &mut [f64]) {
    if layer.is_empty() {
        return;
    }
    // offset[i]: the least distance from the first centre to the i-th.
    let mut offset = vec![0.0; layer.len()];
    for i in 1..layer.len() {
        let (a, b) = (&vertices[layer[i - 1]], &vertices[layer[i]]);
        let gap = if a.edge.is_some() && a.h == 0.0 || b.edge.is_some() && b.h == 0.0 {
            GAP_X / 2.0
        } else {
            GAP_X
        };
        offset[i] = offset[i - 1] + (a.w + b.w) / 2.0 + gap;
    }
    // Blocks of (sum, count, first index) whose means must not decrease.
    let mut blocks: Vec<(f64, f64, usize)> = Vec::new();
    for i in 0..layer.len() {
        blocks.push((want[i] - offset[i], 1.0, i));
        while blocks.len() > 1 {
            let (s2, c2, _) = blocks[blocks.len() - 1];
            let (s1, c1, _) = blocks[blocks.len() - 2];
            if s1 / c1 <= s2 / c2 {
                break;
            }
            blocks.pop();
            let last = blocks.last_mut().expect("two blocks");
            last.0 += s2;
            last.1 += c2;
        }
    }
    for (b, &(sum, count, first)) in blocks.iter().enumerate() {
        let end = blocks.get(b + 1).map_or(layer.len(), |n| n.2);
        for i in first..end {
            x[layer[i]] = sum / count + offset[i];
        }
    }
}

fn label_width(label: &str) -> f64 {
    (label.chars().count() as f64 * LABEL_CHAR_W + LABEL_COUNT_W).clamp(LABEL_MIN_W, LABEL_MAX_W)
}

fn box_width(texts: &[&str]) -> f64 {
    let longest = texts.iter().map(|t| t.chars().count()).max().unwrap_or(0);
    (longest as f64 * CHAR_W + 24.0).clamp(BOX_MIN_W, BOX_MAX_W)
}

/// A duration in ms as the largest whole unit (`2h`, `90m`).
fn duration(ms: u64) -> String {
    for (unit, size) in [
        ("w", 604_800_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// An edge leaving a step: (target, kind, stats key, label).
type Out<'a> = (Option<&'a String>, EdgeKind, Option<String>, Option<String>);

/// The nodes (sized, not placed) and edges of a journey.
fn graph(journey: &Journey) -> (Vec<Node>, Vec<Edge>) {
    let mut nodes = Vec::new();
    let mut edges = Vec::new();
    let node = |id: String, kind: NodeKind, title: String, detail: String, loops: Vec<String>| {
        let (w, h) = match kind {
            NodeKind::End => (END_W, END_H),
            _ => {
                let mut texts = vec![title.as_str(), detail.as_str()];
                texts.extend(loops.iter().map(|l| l.as_str()));
                (box_width(&texts), BOX_H + LOOP_LINE_H * loops.len() as f64)
            }
        };
        Node {
            id,
            kind,
            title,
            detail,
            loops,
            rect: Rect {
                x: 0.0,
                y: 0.0,
                w,
                h,
            },
        }
    };
    nodes.push(node(
        "@entry".into(),
        NodeKind::Entry,
        "Entry".into(),
        journey.entry.event.clone(),
        Vec::new(),
    ));
    let first = journey.steps.first().map(|s| s.id.clone());
    if let Some(first) = first {
        edges.push(edge("@entry", &first, EdgeKind::Entry, None, None));
    }
    if let Some(send) = &journey.exit.send {
        let events: Vec<&str> = journey
            .exit
            .events
            .iter()
            .map(|e| e.event.as_str())
            .collect();
        nodes.push(node(
            "@exit".into(),
            NodeKind::Exit,
            "Exit".into(),
            events.join(", "),
            Vec::new(),
        ));
        edges.push(edge("@exit", send, EdgeKind::Exit, None, None));
    }
    let mut ends = 0;
    for step in &journey.steps {
        let mut out: Vec<Out> = Vec::new();
        let mut loops = Vec::new();
        let (kind, detail) = match &step.kind {
            StepKind::HoldUntil {
                branches,
                max_hold,
                on_timeout,
            } => {
                for b in branches {
                    if b.reset_timer {
                        loops.push(b.label());
                    } else {
                        out.push((
                            b.next.as_ref(),
                            EdgeKind::Branch,
                            Some(b.label()),
                            Some(b.label()),
                        ));
                    }
                }
                if let Some(max) = max_hold {
                    let label = crate::engine::stats::TIMEOUT.to_string();
                    out.push((
                        on_timeout.as_ref(),
                        EdgeKind::Timeout,
                        Some(label.clone()),
                        Some(format!("{label} {}", duration(*max))),
                    ));
                }
                let detail = match max_hold {
                    Some(max) => format!("hold until · max {}", duration(*max)),
                    None => "hold until".to_string(),
                };
                ("hold_until", detail)
            }
            StepKind::Delay {
                duration: d,
                until,
                next,
            } => {
                out.push((next.as_ref(), EdgeKind::Next, None, None));
                let detail = match (until, d) {
                    (Some(u), _) => format!("delay until {}", u.path.join(".")),
                    (None, Some(d)) => format!("delay {}", duration(*d)),
                    (None, None) => "delay".to_string(),
                };
                ("delay", detail)
            }
            StepKind::Split {
                branches,
                otherwise,
            } => {
                for (n, b) in branches.iter().enumerate() {
                    out.push((
                        b.next.as_ref(),
                        EdgeKind::Branch,
                        Some(b.label(n)),
                        Some(b.label(n)),
                    ));
                }
                out.push((
                    otherwise.as_ref(),
                    EdgeKind::Else,
                    Some("else".into()),
                    Some("else".into()),
                ));
                ("split", "split".to_string())
            }
            StepKind::RandomSplit { branches, sticky } => {
                for (n, b) in branches.iter().enumerate() {
                    out.push((
                        b.next.as_ref(),
                        EdgeKind::Branch,
                        Some(b.label(n)),
                        Some(format!("{} {}%", b.label(n), b.percent)),
                    ));
                }
                let detail = if *sticky {
                    "random split · sticky"
                } else {
                    "random split"
                };
                ("random_split", detail.to_string())
            }
            StepKind::Send {
                destination, next, ..
            } => {
                out.push((next.as_ref(), EdgeKind::Next, None, None));
                ("send", format!("send → {destination}"))
            }
        };
        // The exit send's `next` is null by validation: it ends in "exited", drawn as no edge.
        let is_exit_send = journey.exit.send.as_deref() == Some(step.id.as_str());
        nodes.push(node(
            step.id.clone(),
            NodeKind::Step(kind),
            step.id.clone(),
            detail,
            loops,
        ));
        for (target, kind, branch, label) in out {
            let to = match target {
                Some(t) => t.clone(),
                None if is_exit_send && kind == EdgeKind::Next => continue,
                None => {
                    ends += 1;
                    let id = format!("@end{ends}");
                    nodes.push(node(
                        id.clone(),
                        NodeKind::End,
                        "End".into(),
                        String::new(),
                        Vec::new(),
                    ));
                    id
                }
            };
            edges.push(Edge {
                from: step.id.clone(),
                to,
                kind,
                branch,
                label,
                label_rect: None,
                points: Vec::new(),
            });
        }
    }
    (nodes, edges)
}

fn edge(
    from: &str,
    to: &str,
    kind: EdgeKind,
    branch: Option<String>,
    label: Option<String>,
) -> Edge {
    Edge {
        from: from.into(),
        to: to.into(),
        kind,
        branch,
        label,
        label_rect: None,
        points: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn examples() -> Vec<(String, Value)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path().join("journey.json");
            if path.exists() {
                let text = std::fs::read_to_string(&path).unwrap();
                out.push((
                    path.display().to_string(),
                    serde_json::from_str(&text).unwrap(),
                ));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// A valid 50-step journey with every step type, branches that skip ahead and join: the
    /// file the browser tests draw too, `generated(50)` as it stands.
    pub(crate) fn fifty_steps() -> Value {
        serde_json::from_str(include_str!(
            "../../../tests/fixtures/journeys/fifty-steps.json"
        ))
        .expect("the fifty-step journey is JSON")
    }

    pub(crate) fn generated(count: usize) -> Value {
        let id = |i: usize| -> Value {
            if i < count {
                json!(format!("step_{i:02}"))
            } else {
                Value::Null
            }
        };
        let steps: Vec<Value> = (0..count)
            .map(|i| match i % 5 {
                0 => json!({"id": format!("step_{i:02}"), "type": "hold_until", "max_hold": "1d",
                    "branches": [
                        {"name": format!("go {i}"), "event": format!("Go_{i}"), "next": id(i + 1)},
                        {"name": "skip", "event": "Skip", "next": id(i + 2)},
                        {"name": "again", "event": "Again", "reset_timer": true}
                    ],
                    "on_timeout": id(i + 3)}),
                1 => json!({"id": format!("step_{i:02}"), "type": "split",
                    "branches": [{"name": "premium", "where": [{"path": "traits.tier", "equals": "p"}],
                                  "next": id(i + 1)}],
                    "else": id(i + 2)}),
                2 => json!({"id": format!("step_{i:02}"), "type": "delay", "duration": "2h",
                    "next": id(i + 1)}),
                3 => json!({"id": format!("step_{i:02}"), "type": "random_split",
                    "branches": [{"name": "a", "percent": 50, "next": id(i + 1)},
                                 {"name": "b", "percent": 50, "next": id(i + 2)}]}),
                _ => json!({"id": format!("step_{i:02}"), "type": "send", "destination": "crm",
                    "next": id(i + 1)}),
            })
            .collect();
        json!({"id": "fifty", "name": "Fifty steps", "entry": {"event": "Go"}, "steps": steps})
    }

    fn check(name: &str, doc: &Value) -> Layout {
        let journey =
            crate::journey::parse(doc).unwrap_or_else(|p| panic!("{name} does not parse: {p:?}"));
        let l = layout(&journey);
        // Every box and label is inside the drawing and overlaps no other.
        let mut rects: Vec<(String, Rect)> = l
            .nodes
            .iter()
            .map(|n| (format!("node {}", n.id), n.rect))
            .collect();
        rects.extend(
            l.edges
                .iter()
                .filter_map(|e| Some((format!("label {}->{}", e.from, e.to), e.label_rect?))),
        );
        for (i, (a, ra)) in rects.iter().enumerate() {
            assert!(
                ra.x >= 0.0 && ra.y >= 0.0 && ra.x + ra.w <= l.width && ra.y + ra.h <= l.height,
                "{name}: {a} {ra:?} outside {}x{}",
                l.width,
                l.height
            );
            for (b, rb) in &rects[i + 1..] {
                assert!(!ra.overlaps(rb), "{name}: {a} {ra:?} overlaps {b} {rb:?}");
            }
        }
        // Every labelled edge has its label placed; every edge goes downwards from its source's
        // bottom to its target's top.
        let by_id: HashMap<&str, &Node> = l.nodes.iter().map(|n| (n.id.as_str(), n)).collect();
        for e in &l.edges {
            assert_eq!(e.label.is_some(), e.label_rect.is_some(), "{name}: {e:?}");
            let (s, t) = (by_id[e.from.as_str()], by_id[e.to.as_str()]);
            let first = e.points[0];
            let last = e.points[e.points.len() - 1];
            assert_eq!(first.1, s.rect.y + s.rect.h, "{name}: {e:?}");
            assert_eq!(last.1, t.rect.y, "{name}: {e:?}");
            assert!(first.0 >= s.rect.x && first.0 <= s.rect.x + s.rect.w);
            assert!(last.0 >= t.rect.x && last.0 <= t.rect.x + t.rect.w);
            assert!(
                e.points.windows(2).all(|w| w[1].1 >= w[0].1),
                "{name}: {e:?}"
            );
            // Between layers an edge never passes through a box or label: its vertical runs are
            // at its own virtual nodes, which are laid out like boxes.
            for w in e.points.windows(2) {
                if w[0].0 == w[1].0 && w[1].1 > w[0].1 {
                    let run = Rect {
                        x: w[0].0 - 0.5,
                        y: w[0].1 + 0.5,
                        w: 1.0,
                        h: w[1].1 - w[0].1 - 1.0,
                    };
                    for (what, r) in &rects {
                        let own = what == &format!("node {}", e.from)
                            || what == &format!("node {}", e.to)
                            || what == &format!("label {}->{}", e.from, e.to);
                        assert!(
                            own || !run.overlaps(r),
                            "{name}: edge {}->{} runs through {what}",
                            e.from,
                            e.to
                        );
                    }
                }
            }
        }
        l
    }

    #[test]
    fn examples_draw_without_overlaps() {
        let examples = examples();
        assert!(examples.len() >= 7, "{examples:?}");
        for (name, doc) in &examples {
            let l = check(name, doc);
            assert!(l.width < 1300.0, "{name} is {} wide", l.width);
        }
    }

    #[test]
    fn fifty_steps_draw_without_overlaps() {
        for n in [1, 2, 5, 12, 27, 50] {
            check(&format!("{n} steps"), &generated(n));
        }
        assert_eq!(
            generated(50),
            fifty_steps(),
            "the fixture is the generator's output"
        );
        let l = check("fifty", &fifty_steps());
        assert_eq!(
            l.nodes.iter().filter(|n| !n.id.starts_with('@')).count(),
            50
        );
    }

    #[test]
    fn the_spec_example_with_exit_send() {
        let doc: Value = serde_json::from_str(include_str!(
            "../../../tests/fixtures/journeys/spec-example.json"
        ))
        .unwrap();
        let l = check("spec", &doc);
        let wait = l.nodes.iter().find(|n| n.id == "wait_for_order").unwrap();
        assert_eq!(wait.loops, vec!["cart changed"]);
        assert_eq!(wait.detail, "hold until · max 2h");
        let kinds: Vec<(&str, &str, &str)> = l
            .edges
            .iter()
            .map(|e| (e.from.as_str(), e.to.as_str(), e.kind.as_str()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("@entry", "wait_for_order", "entry"),
                ("@exit", "notify_exit", "exit"),
                ("wait_for_order", "@end1", "branch"),
                ("wait_for_order", "remind", "timeout"),
                ("remind", "@end2", "next"),
            ]
        );
        let timeout = &l.edges[3];
        assert_eq!(timeout.branch.as_deref(), Some("timeout"));
        assert_eq!(timeout.label.as_deref(), Some("timeout 2h"));
    }

    #[test]
    fn crossings_are_counted() {
        // Two layers: 0,1 over 2,3 with links 0-3 and 1-2 cross once.
        let layers = vec![vec![0, 1], vec![2, 3]];
        let down = vec![vec![3], vec![2], vec![], vec![]];
        let pos = vec![0.0, 1.0, 0.0, 1.0];
        assert_eq!(crossings(&layers, &down, &pos), 1);
        let down = vec![vec![2], vec![3], vec![], vec![]];
        assert_eq!(crossings(&layers, &down, &pos), 0);
    }

    #[test]
    fn durations_read_as_their_largest_unit() {
        assert_eq!(duration(7_200_000), "2h");
        assert_eq!(duration(5_400_000), "90m");
        assert_eq!(duration(86_400_000 * 14), "2w");
        assert_eq!(duration(1_500), "1500ms");
    }
}
