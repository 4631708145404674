"""The remote-ready nnsight path: one session per capture call, readers after the session.

``remote = "local"`` is nnsight 0.8's own simulation of a remote request (``LocalSimulationBackend``:
the session is serialized, deserialized with the user's modules hidden, and run here), so a capture
that passes it is one NDIF could run; its tensors must equal today's in-process nnsight traces.
"""

from __future__ import annotations

import pytest
import torch

from workbench.hooks import BackendError, Intervention, capture
from workbench.hooks.nnsight_remote import NDIF_KEY_VARIABLE, RemoteExecutionError, check_remote_ready
from workbench.models import tiny_model

PROMPTS = ["the man said", "who can not be determined the old person was", "a", "b c d e f g h"]
ANSWERS = [" he could pay", " unknown", " b c .", " i"]
SITES = [
    "blocks.*.hook_resid_pre",
    "blocks.*.hook_resid_mid",
    "blocks.*.hook_resid_post",
    "blocks.*.hook_attn_out",
    "blocks.*.hook_mlp_out",
    "blocks.*.attn.hook_z",
    "blocks.1.attn.hook_pattern[0,2]",
    "ln_final.hook_normalized",
]
POSITIONS = ("last_prompt", "last", "answer_mean", "answer_all")


@pytest.fixture(scope="module")
def llama():
    return tiny_model("llama", n_layers=3)


@pytest.mark.parametrize(
    "interventions",
    [
        (),
        (
            Intervention("blocks.1.hook_resid_mid", "add", value=torch.linspace(-1, 1, 64)),
            Intervention("blocks.0.attn.hook_z", "scale", value=0.5, heads=(1, 3)),
        ),
    ],
    ids=["read-only", "edited"],
)
def test_a_simulated_remote_session_gives_the_in_process_tensors(llama, interventions) -> None:
    """Ragged prompts in two batches (one session, two traces), every site kind, edits inside the traces."""
    common = dict(sites=SITES, answers=ANSWERS, positions=POSITIONS, backend="nnsight", batch_size=2)
    local = capture(llama, PROMPTS, interventions=interventions, **common)
    remote = capture(llama, PROMPTS, interventions=interventions, remote="local", **common)
    assert set(remote.keys()) == set(local.keys())
    for key in local.keys():  # noqa: SIM118 (a Capture, not a dict)
        # the same float32 forward, serialized and run again: equal up to the kernels' reduction order
        torch.testing.assert_close(remote[key], local[key], rtol=1e-5, atol=1e-6)
    if interventions:
        plain = capture(llama, PROMPTS, **common)
        assert not torch.allclose(plain["blocks.2.hook_resid_post", "last"], local["blocks.2.hook_resid_post", "last"])


def test_remote_runs_on_the_nnsight_backend_only(llama) -> None:
    with pytest.raises(BackendError, match="runs on the nnsight backend only, not 'hf'; use backend \"nnsight\""):
        capture(llama, PROMPTS, sites="blocks.0.hook_resid_post", remote="local")


def test_without_an_api_key_ndif_is_refused_in_one_line_naming_the_variable(monkeypatch) -> None:
    monkeypatch.delenv(NDIF_KEY_VARIABLE, raising=False)
    with pytest.raises(RemoteExecutionError, match=f"needs an NDIF API key: set {NDIF_KEY_VARIABLE}") as error:
        check_remote_ready(True, "meta-llama/Llama-3.1-8B", "hub")
    assert "\n" not in str(error.value)
    monkeypatch.setenv(NDIF_KEY_VARIABLE, "key")
    check_remote_ready(True, "meta-llama/Llama-3.1-8B", "hub")  # a hub model with a key: ready
    check_remote_ready("local", "anything", "embedded")  # the simulation needs neither


def test_a_model_ndif_cannot_name_is_refused_before_any_trace(llama, monkeypatch) -> None:
    monkeypatch.setenv(NDIF_KEY_VARIABLE, "key")
    with pytest.raises(RemoteExecutionError, match="NDIF, which serves hub models only; .* is a in-memory model"):
        capture(llama, PROMPTS, sites="blocks.0.hook_resid_post", backend="nnsight", remote=True)


def test_the_model_table_takes_remote_on_the_nnsight_backend_only() -> None:
    from workbench.config import ConfigError, ModelConfig

    assert ModelConfig(backend="nnsight", remote="local").remote == "local"
    assert ModelConfig(backend="nnsight", remote=True).remote is True
    with pytest.raises(ConfigError, match=r'\[model\] remote = true .* set \[model\] backend = "nnsight" \(not "hf"\)'):
        ModelConfig(remote=True)
    with pytest.raises(ConfigError, match=r'\[model\] remote = "ndif" must be true or false or one of "local"'):
        ModelConfig(backend="nnsight", remote="ndif")  # type: ignore[arg-type]
