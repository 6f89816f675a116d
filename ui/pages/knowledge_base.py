"""Knowledge Base (admin): drop PDFs into inputs/, watch the pipeline, inspect documents and runs."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import get_args

import pandas as pd
import streamlit as st
from pydantic import ValidationError

from pipeline_contracts.api_requests import MAX_EPOCHS, MAX_LEARNING_RATE, MAX_SWEEP_TRIALS, Preset, TrainChoices
from pipeline_contracts.api_responses import RunDetail, Status
from ui import page_setup, run_view, status_view, uploads
from ui.api_client import ApiError
from ui.documents_view import document_rows
from ui.markdown_text import literal
from ui.settings import SettingsError
from ui.storage import container_client

config = page_setup.settings()
api = page_setup.api(config)

st.title(":material/library_books: Knowledge Base")
st.caption(
    "Drop PDFs below. Shortly after the last upload of a burst the system extracts their text, "
    "fine-tunes GPT-2 on it, evaluates the candidate and deploys it if it does better."
)

_BOX = {
    status_view.IDLE: (st.info, ":material/bedtime:"),
    status_view.IN_PROGRESS: (st.warning, ":material/model_training:"),
    status_view.DEPLOYED: (st.success, ":material/rocket_launch:"),
    status_view.FAILED: (st.error, ":material/error:"),
}
_RESULT_BOX = {
    uploads.UPLOADED: st.success,
    uploads.DUPLICATE: st.info,
    uploads.RENAMED: st.warning,
    uploads.REFUSED: st.error,
}


@st.fragment(run_every=config.status_refresh_s)
def status_panel() -> None:
    st.subheader("Status")
    try:
        status = api.status()
        run_id = status_view.run_id(status)
        run = api.run(run_id) if run_id else None
    except ApiError as err:
        st.error(literal(str(err)), icon=":material/cloud_off:")
        return
    summary = status_view.summarize(status, run, datetime.now(UTC))
    box, icon = _BOX.get(summary.state, (st.info, ":material/info:"))
    box("\n\n".join([f"**{literal(summary.headline)}**", *map(literal, summary.details)]), icon=icon)
    st.caption(
        f"Scoring URL: {status.scoring_url or 'none yet'} · refreshed "
        f"{datetime.now(UTC):%H:%M:%S} UTC, every {config.status_refresh_s:g} s"
    )
    choices = retrain_choices()
    if st.button(
        "Retrain now on every document",
        icon=":material/refresh:",
        disabled=summary.state == status_view.IN_PROGRESS or choices is None,
    ):
        try:
            answer = api.retrain(choices)
        except ApiError as err:
            st.error(literal(str(err)))
        else:
            st.success(literal(f"Run {answer.run} queued: {answer.detail}."))
    rollback_panel(status, summary.state == status_view.IN_PROGRESS)
    if summary.state == status_view.IN_PROGRESS and st.button("Cancel the active run", icon=":material/cancel:"):
        try:
            answer = api.cancel_run()
        except ApiError as err:
            st.error(literal(str(err)))
        else:
            st.warning(literal(f"Run {answer.run} {answer.state}: {answer.error or ''}"))


def retrain_choices() -> TrainChoices | None:
    """The retrain button's options, starting at what the next run would use (GET /api/retrain), so a user
    changes only what they want: only the fields changed are sent. None when they cannot go together."""
    try:
        defaults = api.retrain_defaults()
    except ApiError as err:  # the button still queues a run with the app settings
        st.caption(literal(f"Retrain options unavailable: {err}"))
        return TrainChoices()
    shown = st.session_state
    if shown.get("rt_defaults") != defaults:  # the first render, or the app settings changed
        shown.update(
            rt_defaults=defaults,
            rt_preset=defaults.preset,
            rt_base=defaults.base_model,
            rt_epochs=defaults.epochs,
            rt_lr=defaults.learning_rate,
            rt_sweep=defaults.sweep_trials,
        )
    with st.expander("Retrain options", icon=":material/tune:"):
        st.caption(
            "What the next run uses: the app settings, and the preset's own epochs and learning rate where "
            "those are not set. Change what you want; only changes are sent."
        )
        left, right = st.columns(2)
        preset = left.selectbox("Preset", get_args(Preset), key="rt_preset", on_change=_preset_changed)
        base_model = right.text_input("Base model", key="rt_base").strip()
        epochs = left.number_input("Epochs", 0.1, float(MAX_EPOCHS), step=1.0, key="rt_epochs")
        learning_rate = right.number_input(
            "Learning rate", 1e-7, MAX_LEARNING_RATE, step=1e-5, format="%.2e", key="rt_lr"
        )
        trials = left.number_input("Sweep trials (0 = no sweep)", 0, MAX_SWEEP_TRIALS, key="rt_sweep")
    unset = defaults.presets[preset]  # what the preset gives a field left unset
    try:
        return TrainChoices(
            preset=None if preset == defaults.preset else preset,
            base_model=None if base_model in ("", defaults.base_model) else base_model,
            epochs=None if epochs == unset.epochs else epochs,
            learning_rate=None if math.isclose(learning_rate, unset.learning_rate) else learning_rate,
            sweep_trials=None if trials == defaults.sweep_trials else trials,
        )
    except ValidationError as err:  # the API would refuse the same: say so before the click
        st.error(literal(err.errors()[0]["msg"].removeprefix("Value error, ")))
        return None


def _preset_changed() -> None:
    """Another preset: show its own epochs and learning rate (unless the app settings fix them)."""
    values = st.session_state["rt_defaults"].presets[st.session_state["rt_preset"]]
    st.session_state.update(rt_epochs=values.epochs, rt_lr=values.learning_rate)


def rollback_panel(status: Status, busy: bool) -> None:
    """Roll the traffic back to the kept previous deployment, after a confirmation."""
    serving = status.serving_model
    if not serving or not serving.rollback_deployment:
        return
    target = serving.rollback_deployment
    if st.button(f"Roll back to {target}", icon=":material/undo:", disabled=busy, key="rollback"):
        st.session_state["confirm_rollback"] = target
    if st.session_state.get("confirm_rollback") != target:
        return
    confirmation = st.empty()
    with confirmation.container():
        st.warning(
            literal(f"Move all traffic from {serving.deployment} (version {serving.version}) back to {target}?"),
            icon=":material/warning:",
        )
        yes, no = st.columns(2)
        confirmed, kept = (
            yes.button("Yes, roll back", type="primary", key="rollback_yes"),
            no.button("Keep serving", key="rollback_no"),
        )
    if not (confirmed or kept):
        return
    st.session_state.pop("confirm_rollback")
    confirmation.empty()
    if confirmed:
        try:
            done = api.rollback("Knowledge Base page")
        except ApiError as err:
            st.error(literal(str(err)))
        else:
            st.success(literal(f"Rolled back: {done.serving} ({done.model_name} v{done.model_version}) serves."))


def upload_panel() -> None:
    st.subheader("Upload documents")
    kind = st.text_input(
        "Document kind (optional)",
        key="upload_kind",
        max_chars=40,
        placeholder="e.g. letters",
        help="Files dropped now go into inputs/<kind>/. Training marks each document of a kind with its own "
        "token <|kind|>, and the Chat page can then ask for that kind of text. Letters, digits and hyphens; "
        "empty: no kind.",
    ).strip()
    kind_error = uploads.kind_refusal(kind)
    if kind_error:
        st.error(literal(f"Not uploaded yet: {kind_error}"), icon=":material/error:")
    files = st.file_uploader(
        f"Drag and drop PDFs, plain text (.txt, .md) or instruction records (.jsonl, .json: instruction/input/"
        f"output or prompt/completion) here (up to {config.max_upload_mb:g} MiB each); they go straight into "
        f"inputs/ of container {config.data_container}.",
        type=["pdf", "txt", "md", "jsonl", "json"],
        accept_multiple_files=True,
        key="pdfs",
        max_upload_size=math.ceil(config.max_upload_mb),
    )
    if not files:
        return
    # Each dropped file is uploaded once per session; reruns (any click) only show its result again.
    results: dict[str, uploads.UploadResult] = st.session_state.setdefault("upload_results", {})
    waiting = [f for f in files if f.file_id not in results]
    if waiting and not kind_error:
        try:
            container = container_client(config)
        except SettingsError as err:
            st.error(literal(str(err)))
            return
        with st.spinner(f"Uploading {len(waiting)} file(s)..."):
            for f in waiting:
                results[f.file_id] = uploads.upload_document(
                    container, f.name, f.getvalue(), config.max_upload_bytes, kind
                )
    for f in files:
        result = results.get(f.file_id)
        if result is None:
            st.info(f"**{literal(f.name)}** waits for a valid document kind.")
            continue
        _RESULT_BOX[result.outcome](f"**{literal(result.file_name)}**: {literal(result.message)}")


@st.fragment(run_every=config.status_refresh_s)
def documents_panel() -> None:
    st.subheader("Documents")
    try:
        documents = api.documents()
        problems = api.status().problem_documents
    except ApiError:
        st.caption("Unavailable: the control plane API did not answer (see Status).")
        return
    for problem in problems:
        st.error(f"**{literal(problem.name)}** is not used: {literal(problem.reason)}", icon=":material/block:")
    if not documents and not problems:
        st.info("No document recorded yet. Uploads appear here within seconds.")
        return
    if documents:
        st.dataframe(pd.DataFrame(document_rows(documents)), hide_index=True)
    delete_panel([d.name for d in documents] + [p.name for p in problems])


def delete_panel(names: list[str]) -> None:
    """Deleting a document deletes its blob: no later run trains on it and its extracted text is purged."""
    name = st.selectbox(
        "Document to delete", names, index=None, key="delete_name", placeholder="Choose a document to delete"
    )
    if st.button("Delete document", icon=":material/delete:", disabled=name is None, key="delete_button"):
        try:
            api.delete_document(name)
        except ApiError as err:
            st.error(literal(str(err)))
        else:
            st.success(literal(f"Deleted {name}: the next run leaves it out."))


@st.fragment(run_every=config.status_refresh_s)
def runs_panel() -> None:
    st.subheader("Run history")
    try:
        runs = api.runs()
    except ApiError:
        st.caption("Unavailable: the control plane API did not answer (see Status).")
        return
    if not runs:
        st.info("No run yet. The first one starts shortly after the first upload.")
        return
    st.dataframe(pd.DataFrame(run_view.run_rows(runs)), hide_index=True)
    run_id = st.selectbox("Run", [r.id for r in runs], key="selected_run")
    try:
        run = api.run(run_id)
    except ApiError as err:
        st.error(literal(str(err)))
        return
    run_details(run)


def run_details(run: RunDetail) -> None:
    error = f" · {run.error}" if run.error else ""
    st.markdown(f"**Run {literal(run.id)}**: {literal(run.state + error)}")
    curve = run_view.loss_curve(run)
    finals = run_view.final_losses(run)
    if curve:
        st.line_chart(pd.DataFrame(curve).set_index("step"), x_label="step", y_label="loss")
    elif finals:
        st.caption("The API reports no per-step loss for this run; these are its end-of-training figures.")
    else:
        st.caption("No training metrics yet.")
    if finals:
        for column, (label, value) in zip(st.columns(len(finals)), finals.items(), strict=True):
            column.metric(label, f"{value:,.3f}" if value < 1000 else f"{value:,.0f}")
    system = run_view.system_metrics(run)
    if system["utilisation"]:
        st.markdown("**System during training** (sampled by MLflow)")
        left, right = st.columns(2)
        left.line_chart(pd.DataFrame(system["utilisation"]).set_index("s"), x_label="seconds", y_label="%")
        right.line_chart(pd.DataFrame(system["memory"]).set_index("s"), x_label="seconds", y_label="GB")
    sweep_details(run)
    evaluation = run_view.evaluation(run)
    if evaluation:
        st.markdown(f"**Evaluation: {literal(evaluation.decision)}**: {literal(evaluation.reason)}")
        st.dataframe(pd.DataFrame([evaluation.figures]), hide_index=True)
    st.markdown("**Transitions**")
    st.dataframe(pd.DataFrame(run_view.transition_rows(run)), hide_index=True)


@st.fragment(run_every=config.status_refresh_s)
def serving_card_panel() -> None:
    """The serving model's card, from the run that registered it (its evaluation.json, via the API)."""
    try:
        status = api.status()
        run_id = run_view.serving_run_id(status, api.runs())
        card = run_view.card(api.run(run_id)) if run_id else None
    except ApiError:
        return  # the status panel says the API is down
    if card is None:
        return
    st.subheader("Serving model")
    st.dataframe(pd.DataFrame([run_view.card_facts(card)]), hide_index=True)
    st.markdown(f"**Gate**: {literal(card.reason)}")
    st.caption("Limits: " + " ".join(map(literal, card.limits)))
    with st.expander(f"Trained on {card.documents_total} document(s)"):
        st.dataframe(pd.DataFrame(run_view.card_documents(card)), hide_index=True)
        st.dataframe(pd.DataFrame([card.hyperparameters]), hide_index=True)


def sweep_details(run: RunDetail) -> None:
    sweep = run_view.sweep(run)
    if sweep is None:
        return
    st.markdown(
        f"**Sweep: {len(sweep.trials)} trials, trial {sweep.chosen_trial} chosen** "
        f"({literal(sweep.goal)} {literal(sweep.primary_metric)}; stopped early: "
        f"{sum(t.stopped_early for t in sweep.trials)})"
    )
    if sweep.planned_trials and sweep.planned_trials > len(sweep.trials):
        limit = f"the sweep's time limit is {sweep.timeout_s} s" if sweep.timeout_s else "no time limit"
        st.caption(f"{sweep.planned_trials - len(sweep.trials)} planned trial(s) did not run ({limit}).")
    st.dataframe(pd.DataFrame(run_view.sweep_rows(sweep)), hide_index=True, key=f"sweep_{run.id}")
    curves = run_view.sweep_curves(sweep)
    if curves:
        st.line_chart(pd.DataFrame(curves).set_index("epoch"), x_label="epoch", y_label="dev loss")


status_panel()
serving_card_panel()
upload_panel()
documents_panel()
runs_panel()
