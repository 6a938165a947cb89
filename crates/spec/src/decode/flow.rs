//! Decoding of the `workflow` and `pipeline` sections.

use crate::ctx::Ctx;
use crate::model::{
    BoxSpec, PipelineSpec, RunCmd, SandboxSpec, Stage, Step, StepMode, WorkflowSpec,
};
use crate::node::Node;
use crate::text::index;

use super::MapReader;
use super::agent::skills;
use super::read::seq;

pub(crate) fn workflow(ctx: &mut Ctx, node: &Node, path: &str) -> WorkflowSpec {
    let mut w = WorkflowSpec::default();
    let Some(mut m) = MapReader::open(ctx, node, path) else {
        return w;
    };
    if let Some(n) = m.take(ctx, "steps") {
        let p = m.child("steps");
        for (i, item) in seq(ctx, n, &p, "a list of steps")
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            w.steps.push(step(ctx, item, &index(&p, i)));
        }
    }
    w.output_step = m.string(ctx, "output_step");
    m.finish(ctx);
    w
}

/// A step; a rejected one is a placeholder so later steps keep their index.
fn step(ctx: &mut Ctx, node: &Node, path: &str) -> Step {
    let empty_run = RunCmd {
        program: String::new(),
        args: Vec::new(),
        stdin_from: None,
    };
    let Some(mut m) = MapReader::open(ctx, node, path) else {
        return Step {
            name: String::new(),
            run: empty_run,
            depends_on: Vec::new(),
            mode: StepMode::Task,
            timeout_secs: None,
            output_file: None,
            ready_timeout_secs: None,
        };
    };
    let name = m.require_string(ctx, "name", ": every step needs a name");
    let run = m.require(
        ctx,
        "run",
        ": `run: {program, args}` says what the step runs",
    );
    let run = run.and_then(|n| run_cmd(ctx, n, &m.child("run")));
    let depends_on = m.string_list(ctx, "depends_on");
    let mode = match m.word(ctx, "mode", "mode", &["task", "service"]) {
        Some(1) => StepMode::Service,
        _ => StepMode::Task,
    };
    let timeout_secs = m.uint(ctx, "timeout_secs", u64::MAX);
    let output_file = m.string(ctx, "output_file");
    let ready_timeout_secs = m.uint(ctx, "ready_timeout_secs", u64::MAX);
    m.finish(ctx);
    let run = run.unwrap_or(empty_run);
    Step {
        name: name.unwrap_or_default(),
        run,
        depends_on,
        mode,
        timeout_secs,
        output_file,
        ready_timeout_secs,
    }
}

fn run_cmd(ctx: &mut Ctx, node: &Node, path: &str) -> Option<RunCmd> {
    let mut m = MapReader::open(ctx, node, path)?;
    let program = m.require_string(ctx, "program", ": the program to run (no shell)");
    let args = m.string_list(ctx, "args");
    let stdin_from = m.string(ctx, "stdin_from");
    m.finish(ctx);
    Some(RunCmd {
        program: program.unwrap_or_default(),
        args,
        stdin_from,
    })
}

pub(crate) fn pipeline(
    ctx: &mut Ctx,
    node: &Node,
    path: &str,
    sandbox: &SandboxSpec,
) -> PipelineSpec {
    let mut p = PipelineSpec::default();
    let Some(mut m) = MapReader::open(ctx, node, path) else {
        return p;
    };
    if let Some(n) = m.take(ctx, "boxes") {
        let bp = m.child("boxes");
        for (i, item) in seq(ctx, n, &bp, "a list of boxes")
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            p.boxes
                .push(pipeline_box(ctx, item, &index(&bp, i), sandbox));
        }
    }
    if let Some(n) = m.take(ctx, "stages") {
        let sp = m.child("stages");
        for (i, item) in seq(ctx, n, &sp, "a list of stages")
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            p.stages.push(stage(ctx, item, &index(&sp, i)));
        }
    }
    m.finish(ctx);
    p
}

/// A box; a rejected one is a placeholder so later boxes keep their index.
fn pipeline_box(ctx: &mut Ctx, node: &Node, path: &str, base: &SandboxSpec) -> BoxSpec {
    let Some(mut m) = MapReader::open(ctx, node, path) else {
        return BoxSpec {
            name: String::new(),
            prompt: String::new(),
            skills: Vec::new(),
            llm: None,
            timeout_secs: None,
            sandbox: None,
            inputs: Vec::new(),
            outputs: Vec::new(),
        };
    };
    let name = m.require_string(ctx, "name", ": every box needs a name");
    let prompt = m.string(ctx, "prompt").unwrap_or_default();
    let skills = m
        .take(ctx, "skills")
        .map(|n| skills(ctx, n, &m.child("skills")));
    let llm = m
        .take(ctx, "llm")
        .map(|n| super::llm(ctx, n, &m.child("llm")));
    let timeout_secs = m.uint(ctx, "timeout_secs", u64::MAX);
    let sandbox = m
        .take(ctx, "sandbox")
        .map(|n| super::sandbox(ctx, n, &m.child("sandbox"), base));
    let inputs = m.string_list(ctx, "inputs");
    let outputs = m.string_list(ctx, "outputs");
    m.finish(ctx);
    BoxSpec {
        name: name.unwrap_or_default(),
        prompt,
        skills: skills.unwrap_or_default(),
        llm,
        timeout_secs,
        sandbox,
        inputs,
        outputs,
    }
}

/// A stage. A rejected one (not a mapping, unknown `type`) becomes a
/// placeholder that lists the boxes it names, with its path marked
/// rejected: later stages keep their index, and its boxes do not look
/// unused.
fn stage(ctx: &mut Ctx, node: &Node, path: &str) -> Stage {
    let Some(mut m) = MapReader::open(ctx, node, path) else {
        return Stage::FanOut { boxes: Vec::new() };
    };
    let kind = m.require(
        ctx,
        "type",
        ": `box` (one box) or `fan_out` (boxes side by side)",
    );
    let kind =
        kind.and_then(|n| super::word(ctx, n, &m.child("type"), "stage type", &["box", "fan_out"]));
    let stage = match kind {
        Some(0) => {
            let name = m.require_string(ctx, "name", ": the box this stage runs");
            Stage::Box {
                name: name.unwrap_or_default(),
            }
        }
        Some(_) => {
            let boxes_present = m.has("boxes");
            let boxes = m.string_list(ctx, "boxes");
            if !boxes_present {
                let message =
                    "missing required key `boxes`: the boxes this stage runs side by side";
                ctx.missing(Some(m.mark()), &m.child("boxes"), message.to_string());
            }
            Stage::FanOut { boxes }
        }
        None => {
            ctx.reject(path);
            let mut boxes: Vec<String> = m.string(ctx, "name").into_iter().collect();
            boxes.extend(m.string_list(ctx, "boxes"));
            Stage::FanOut { boxes }
        }
    };
    m.finish(ctx);
    stage
}
