//! Rules of the `workflow` and `pipeline` sections: names, references
//! between steps, boxes and stages, dependency cycles.

use std::collections::{HashMap, HashSet, VecDeque};

use crate::ctx::Ctx;
use crate::model::{PipelineSpec, SandboxSpec, Stage, Step, StepMode, WorkflowSpec};
use crate::text::{MAX_NAME_LEN, did_you_mean, index, is_identifier, join, quote};

use super::agent::{prompt, sandbox_file_problem, skills};
use super::{llm, sandbox, timeout};

/// Most steps in a workflow and boxes in a pipeline.
pub const MAX_STEPS: usize = 1000;

/// "`a`, `b`, `c`" for up to ten names, then "…".
fn names_list(names: &[&str]) -> String {
    let mut out: Vec<String> = names.iter().take(10).map(|n| quote(n)).collect();
    if names.len() > 10 {
        out.push("…".into());
    }
    out.join(", ")
}

/// Checks a step or box name and its uniqueness; `what` is `("step",
/// "steps")` or `("box", "boxes")`.
fn unique_name<'a>(
    ctx: &mut Ctx,
    seen: &mut HashMap<&'a str, usize>,
    name: &'a str,
    i: usize,
    path: &str,
    (what, list): (&str, &str),
) {
    let p = join(path, "name");
    if !is_identifier(name) {
        let message = format!(
            "{what} name {} must be 1 to {MAX_NAME_LEN} letters, digits, `-` or `_`, starting \
             with a letter or digit (it becomes a stage name and a URL segment)",
            quote(name)
        );
        ctx.rule(&p, message);
    } else if let Some(first) = seen.get(name) {
        ctx.rule(
            &p,
            format!(
                "{what} name {} is already used by {list}[{first}]",
                quote(name)
            ),
        );
    } else {
        seen.insert(name, i);
    }
}

pub(crate) fn workflow(ctx: &mut Ctx, w: &WorkflowSpec, path: &str) {
    let steps_path = join(path, "steps");
    if w.steps.is_empty() {
        let message = "workflow.steps cannot be empty: add a step with `name` and `run`";
        ctx.rule(&steps_path, message.into());
    } else if w.steps.len() > MAX_STEPS {
        let message = format!(
            "workflow.steps has {} steps; at most {MAX_STEPS}",
            w.steps.len()
        );
        ctx.rule(&steps_path, message);
        return;
    }
    let mut by_name = HashMap::new();
    for (i, step) in w.steps.iter().enumerate() {
        let p = index(&steps_path, i);
        unique_name(ctx, &mut by_name, &step.name, i, &p, ("step", "steps"));
        let run = join(&p, "run");
        if step.run.program.trim().is_empty() {
            ctx.rule(&join(&run, "program"), "program cannot be empty".into());
        }
        for (j, arg) in std::iter::once(&step.run.program)
            .chain(&step.run.args)
            .enumerate()
        {
            if arg.contains('\0') {
                let at = if j == 0 {
                    join(&run, "program")
                } else {
                    index(&join(&run, "args"), j - 1)
                };
                ctx.rule(&at, "cannot contain a NUL character".into());
            }
        }
        step_mode(ctx, step, &p);
    }
    let names: Vec<&str> = w.steps.iter().map(|s| s.name.as_str()).collect();
    let unknown = |kind: &str, name: &str| {
        format!(
            "{kind} names an unknown step {}{}; steps: {}",
            quote(name),
            did_you_mean(name, &names),
            names_list(&names)
        )
    };

    // Dependency edges between known steps.
    let mut adj: Vec<Vec<usize>> = vec![Vec::new(); w.steps.len()];
    for (i, step) in w.steps.iter().enumerate() {
        let dp = join(&index(&steps_path, i), "depends_on");
        let mut listed = HashSet::new();
        for (j, dep) in step.depends_on.iter().enumerate() {
            let q = index(&dp, j);
            if *dep == step.name {
                let message = format!(
                    "step {} depends on itself; remove it from depends_on",
                    quote(dep)
                );
                ctx.rule(&q, message);
            } else if !listed.insert(dep.as_str()) {
                ctx.rule(&q, format!("{} is listed twice in depends_on", quote(dep)));
            } else if let Some(&target) = by_name.get(dep.as_str()) {
                adj[i].push(target);
            } else {
                ctx.rule(&q, unknown("depends_on", dep));
            }
        }
    }
    for cycle in cycles(&adj) {
        let Some(&start) = cycle.iter().min() else {
            continue;
        };
        let pos = cycle.iter().position(|&v| v == start).unwrap_or(0);
        let mut ring: Vec<&str> = cycle[pos..]
            .iter()
            .chain(&cycle[..pos])
            .map(|&v| names[v])
            .collect();
        ring.push(names[start]);
        let message = format!(
            "dependency cycle: {}; remove one of these depends_on entries",
            ring.join(" -> ")
        );
        ctx.rule(&join(&index(&steps_path, start), "depends_on"), message);
    }

    for (i, step) in w.steps.iter().enumerate() {
        let Some(source) = &step.run.stdin_from else {
            continue;
        };
        let q = join(&index(&steps_path, i), "run.stdin_from");
        if *source == step.name {
            ctx.rule(
                &q,
                "a step cannot read its own output (stdin_from names the step itself)".into(),
            );
        } else if let Some(&src) = by_name.get(source.as_str()) {
            if !reaches(&adj, i, src) {
                let message = format!(
                    "stdin_from {} must be a step this one depends on, so it has finished; add \
                     it to depends_on",
                    quote(source)
                );
                ctx.rule(&q, message);
            }
        } else {
            ctx.rule(&q, unknown("stdin_from", source));
        }
    }
    if let Some(out) = &w.output_step
        && !by_name.contains_key(out.as_str())
    {
        ctx.rule(&join(path, "output_step"), unknown("output_step", out));
    }
}

/// The rules that tie a step's keys to its mode: a service step names
/// its `output_file` and has no `timeout_secs`; a task step has neither
/// `output_file` nor `ready_timeout_secs`, because its output is always
/// `/workspace/result.json` and it runs to completion.
fn step_mode(ctx: &mut Ctx, step: &Step, path: &str) {
    match step.mode {
        StepMode::Service => {
            if step.timeout_secs.is_some() {
                let message = "mode: service and timeout_secs are mutually exclusive: a service \
                               step runs until it exits or the workflow ends; remove \
                               `timeout_secs` (`ready_timeout_secs` bounds the wait for \
                               output_file)";
                ctx.rule(&join(path, "timeout_secs"), message.into());
            }
            // `present`, not `is_some`: an output_file of the wrong type
            // was reported already.
            if !ctx.present(&join(path, "output_file")) {
                let message = "mode: service requires output_file: set `output_file` to the \
                               file the service writes when its result is ready";
                ctx.rule(&join(path, "mode"), message.into());
            }
            if let Some(problem) = step.output_file.as_deref().and_then(sandbox_file_problem) {
                ctx.rule(&join(path, "output_file"), format!("output_file {problem}"));
            }
        }
        StepMode::Task => {
            if step.output_file.is_some() {
                let message = "output_file applies only to mode: service: a task step's output \
                               is /workspace/result.json; remove `output_file` or write that file";
                ctx.rule(&join(path, "output_file"), message.into());
            }
            if step.ready_timeout_secs.is_some() {
                let message = "ready_timeout_secs applies only to mode: service: a task step \
                               runs to completion and its output is /workspace/result.json; use \
                               timeout_secs";
                ctx.rule(&join(path, "ready_timeout_secs"), message.into());
            }
        }
    }
    timeout(ctx, step.timeout_secs, path, "timeout_secs");
    timeout(ctx, step.ready_timeout_secs, path, "ready_timeout_secs");
}

/// Every cycle met by a depth-first search (one per back edge), each as
/// the list of steps on it.
fn cycles(adj: &[Vec<usize>]) -> Vec<Vec<usize>> {
    const WHITE: u8 = 0;
    const GRAY: u8 = 1;
    const BLACK: u8 = 2;
    let mut color = vec![WHITE; adj.len()];
    let mut found = Vec::new();
    for start in 0..adj.len() {
        if color[start] != WHITE {
            continue;
        }
        color[start] = GRAY;
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        while let Some(top) = stack.last_mut() {
            let v = top.0;
            let Some(&w) = adj[v].get(top.1) else {
                color[v] = BLACK;
                stack.pop();
                continue;
            };
            top.1 += 1;
            match color[w] {
                WHITE => {
                    color[w] = GRAY;
                    stack.push((w, 0));
                }
                GRAY => {
                    let pos = stack.iter().position(|&(x, _)| x == w).unwrap_or(0);
                    found.push(stack[pos..].iter().map(|&(x, _)| x).collect());
                }
                _ => {}
            }
        }
    }
    found
}

/// Whether `to` is reachable from `from` along dependency edges.
fn reaches(adj: &[Vec<usize>], from: usize, to: usize) -> bool {
    let mut seen = vec![false; adj.len()];
    let mut queue = VecDeque::from([from]);
    while let Some(v) = queue.pop_front() {
        for &w in &adj[v] {
            if w == to {
                return true;
            }
            if !seen[w] {
                seen[w] = true;
                queue.push_back(w);
            }
        }
    }
    false
}

pub(crate) fn pipeline(ctx: &mut Ctx, p: &PipelineSpec, path: &str, top: &SandboxSpec) {
    let boxes_path = join(path, "boxes");
    if p.boxes.is_empty() {
        let message = "pipeline.boxes cannot be empty: add a box with `name` and `prompt`";
        ctx.rule(&boxes_path, message.into());
    } else if p.boxes.len() > MAX_STEPS {
        let message = format!(
            "pipeline.boxes has {} boxes; at most {MAX_STEPS}",
            p.boxes.len()
        );
        ctx.rule(&boxes_path, message);
        return;
    }
    let mut by_name = HashMap::new();
    let mut producers: HashMap<&str, usize> = HashMap::new();
    for (i, b) in p.boxes.iter().enumerate() {
        let bp = index(&boxes_path, i);
        unique_name(ctx, &mut by_name, &b.name, i, &bp, ("box", "boxes"));
        prompt(ctx, &b.prompt, &bp);
        skills(ctx, &b.skills, &join(&bp, "skills"));
        if let Some(l) = &b.llm {
            llm(ctx, l, &join(&bp, "llm"));
        }
        timeout(ctx, b.timeout_secs, &bp, "timeout_secs");
        if let Some(s) = &b.sandbox {
            sandbox(ctx, s, &join(&bp, "sandbox"), Some(top));
        }
        for (j, out) in b.outputs.iter().enumerate() {
            let q = index(&join(&bp, "outputs"), j);
            if !is_identifier(out) {
                let message = format!(
                    "output name {} must be 1 to {MAX_NAME_LEN} letters, digits, `-` or `_`",
                    quote(out)
                );
                ctx.rule(&q, message);
            } else if let Some(&first) = producers.get(out.as_str()) {
                let message = format!(
                    "output {} is already produced by boxes[{first}]",
                    quote(out)
                );
                ctx.rule(&q, message);
            } else {
                producers.insert(out, i);
            }
        }
    }
    let stage_of = stages(ctx, p, path, &by_name);
    let outputs: Vec<&str> = producers.keys().copied().collect();
    for (i, b) in p.boxes.iter().enumerate() {
        let ip = join(&index(&boxes_path, i), "inputs");
        for (j, input) in b.inputs.iter().enumerate() {
            let q = index(&ip, j);
            let Some(&producer) = producers.get(input.as_str()) else {
                let message = format!(
                    "input {} is not an output of any box{}",
                    quote(input),
                    did_you_mean(input, &outputs)
                );
                ctx.rule(&q, message);
                continue;
            };
            let before = match (stage_of.get(&producer), stage_of.get(&i)) {
                (Some(a), Some(b)) => a < b,
                _ => true, // a box outside every stage is reported already
            };
            if !before {
                let message = format!(
                    "input {} comes from box {}, which does not run before this box; put that \
                     box in an earlier stage",
                    quote(input),
                    quote(&p.boxes[producer].name)
                );
                ctx.rule(&q, message);
            }
        }
    }
}

/// Checks `stages`; returns the stage index of every box that has one.
fn stages(
    ctx: &mut Ctx,
    p: &PipelineSpec,
    path: &str,
    by_name: &HashMap<&str, usize>,
) -> HashMap<usize, usize> {
    if p.stages.is_empty() {
        // Without `stages`, boxes run one per stage in the order listed.
        return (0..p.boxes.len()).map(|i| (i, i)).collect();
    }
    let stages_path = join(path, "stages");
    let names: Vec<&str> = p.boxes.iter().map(|b| b.name.as_str()).collect();
    let mut stage_of: HashMap<usize, usize> = HashMap::new();
    for (si, stage) in p.stages.iter().enumerate() {
        let sp = index(&stages_path, si);
        let refs: Vec<(String, &str)> = match stage {
            Stage::Box { name } => vec![(join(&sp, "name"), name.as_str())],
            Stage::FanOut { boxes } => {
                if boxes.is_empty() {
                    ctx.rule(
                        &join(&sp, "boxes"),
                        "a fan_out stage needs at least one box".into(),
                    );
                }
                let bp = join(&sp, "boxes");
                boxes
                    .iter()
                    .enumerate()
                    .map(|(j, b)| (index(&bp, j), b.as_str()))
                    .collect()
            }
        };
        for (q, name) in refs {
            let Some(&b) = by_name.get(name) else {
                let message = format!(
                    "stage names an unknown box {}{}; boxes: {}",
                    quote(name),
                    did_you_mean(name, &names),
                    names_list(&names)
                );
                ctx.rule(&q, message);
                continue;
            };
            if let Some(&earlier) = stage_of.get(&b) {
                let message = format!(
                    "box {} already runs in stages[{earlier}]; a box runs once",
                    quote(name)
                );
                ctx.rule(&q, message);
            } else {
                stage_of.insert(b, si);
            }
        }
    }
    for (i, b) in p.boxes.iter().enumerate() {
        if by_name.get(b.name.as_str()) == Some(&i) && !stage_of.contains_key(&i) {
            let message = format!(
                "box {} is not in any stage; add it to `stages` or remove it",
                quote(&b.name)
            );
            ctx.rule(&join(&index(&join(path, "boxes"), i), "name"), message);
        }
    }
    stage_of
}
