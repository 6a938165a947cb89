//! Pipelines: boxes (agent stages, each in its own sandbox) run stage by
//! stage; a `fan_out` stage runs its boxes side by side (up to the run's
//! parallelism limit). Outputs flow forward: a box's input is the outputs
//! of the boxes its `inputs` name, or — when it names none — the previous
//! stage's output (the run input for the first stage). A box's `outputs`
//! are artifact names it must publish. A failed stage stops the pipeline.

use std::collections::BTreeMap;

use futures_util::stream::{FuturesUnordered, StreamExt};
use husk_spec::{BoxSpec, PipelineSpec, Spec, Stage};
use serde_json::{Value, json};

use crate::context::RunContext;
use crate::events::{Level, Scope};
use crate::run::Outcome;
use crate::stage::{self, AgentStage, StageMode, StageResult};

pub async fn run(ctx: &RunContext, spec: &Spec, p: &PipelineSpec) -> Outcome {
    let boxes: BTreeMap<&str, &BoxSpec> = p.boxes.iter().map(|b| (b.name.as_str(), b)).collect();
    let stages = p.effective_stages();
    let plan: Vec<Vec<&str>> = stages.iter().map(Stage::box_names).collect();
    let aliases: BTreeMap<&str, &str> = p
        .boxes
        .iter()
        .flat_map(|b| b.outputs.iter().map(move |o| (o.as_str(), b.name.as_str())))
        .collect();
    ctx.emitter.emit(
        Level::Info,
        "workflow.planned",
        &Scope::default(),
        format!("{} stages, {} boxes", plan.len(), p.boxes.len()),
        Some(json!({"stages": plan})),
    );
    let mut outputs: BTreeMap<String, Value> = BTreeMap::new();
    let mut previous: Option<Value> = ctx.input.clone();
    let mut results: Vec<StageResult> = Vec::new();
    for names in &plan {
        if ctx.cancel.is_cancelled() {
            break;
        }
        let limit = ctx.policy.max_parallel_microvms_per_run.max(1) as usize;
        let mut pending = names.iter().filter_map(|n| boxes.get(n).copied());
        let mut running = FuturesUnordered::new();
        let mut stage_results = Vec::new();
        loop {
            while running.len() < limit {
                let Some(b) = pending.next() else { break };
                let input = box_input(b, &outputs, &aliases, previous.as_ref());
                running.push(async move { run_box(ctx, spec, b, input).await });
            }
            let Some(r) = running.next().await else { break };
            stage_results.push(r);
        }
        stage_results.sort_by_key(|r: &StageResult| names.iter().position(|n| *n == r.report.name));
        let failed = stage_results.iter().any(|r| !r.succeeded());
        for r in &stage_results {
            if let Some(o) = &r.output {
                outputs.insert(r.report.name.clone(), o.clone());
            }
        }
        previous = match stage_results.as_slice() {
            [one] => one.output.clone(),
            many => Some(Value::Object(
                many.iter()
                    .filter_map(|r| Some((r.report.name.clone(), r.output.clone()?)))
                    .collect(),
            )),
        };
        results.extend(stage_results);
        if failed {
            break;
        }
    }
    let error = results.iter().find_map(|r| {
        r.report
            .error
            .as_ref()
            .map(|e| format!("box {}: {e}", r.report.name))
    });
    Outcome {
        stages: results,
        output: if error.is_none() { previous } else { None },
        error,
    }
}

/// The named inputs' outputs, else what the previous stage produced.
fn box_input(
    b: &BoxSpec,
    outputs: &BTreeMap<String, Value>,
    aliases: &BTreeMap<&str, &str>,
    previous: Option<&Value>,
) -> Option<Value> {
    if b.inputs.is_empty() {
        return previous.cloned();
    }
    let value_of = |n: &String| {
        let producer = aliases.get(n.as_str()).copied().unwrap_or(n.as_str());
        outputs.get(producer).cloned().unwrap_or(Value::Null)
    };
    Some(Value::Object(
        b.inputs.iter().map(|n| (n.clone(), value_of(n))).collect(),
    ))
}

async fn run_box(ctx: &RunContext, spec: &Spec, b: &BoxSpec, input: Option<Value>) -> StageResult {
    let st = AgentStage {
        name: &b.name,
        box_name: Some(&b.name),
        prompt: &b.prompt,
        skills: &b.skills,
        llm: b.llm.as_ref().unwrap_or(&spec.llm),
        sandbox: b.sandbox.as_ref().unwrap_or(&spec.sandbox),
        output_file: "/workspace/output.json",
        mode: StageMode::Task {
            timeout_secs: b.effective_timeout_secs(),
        },
        input: input.as_ref(),
        messaging: false,
    };
    stage::run_agent(ctx, &st).await
}
