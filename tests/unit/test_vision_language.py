"""Vision-language models on tiny random LLaVA- and Idefics3-style models built from configs, images made here.

No real VLM weights are available offline: every test runs on random weights, so it checks shapes,
plumbing (the image reaches the forward, the row its item's) and bad input, not answers.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import Gemma3Config

from activations_cache import open_cache, verify_cache
from probes.cache_reading import resolve_probe_sites
from probes.errors import CacheSiteError
from workbench.cli.main import main
from workbench.config import ConfigError, RunConfig
from workbench.experiment.image_checks import check_image_run, check_image_run_before_loading
from workbench.hooks import SiteError, SiteKind, capture, capture_tokens, parse_sites
from workbench.hooks.interventions import Intervention, InterventionError
from workbench.hooks.module_paths import block_modules, layout_for
from workbench.hooks.plan import HookPlan
from workbench.hooks.positions import PositionError
from workbench.hooks.vision import read_vision_site
from workbench.inference.answering import answer_batch
from workbench.inference.generation import generate_greedy, image_chat_prompt
from workbench.models import ModelArchitecture, load_model, tiny_model
from workbench.models.loading import LoadedModel, resolve_model_spec
from workbench.models.placement import plan_device_map
from workbench.models.tiny import tiny_vision_model
from workbench.models.vision import ImageInputs, VisionModelError
from workbench.pipeline import plan_run, run_stage
from workbench.tasks.image_questions import ImageItemError, item_image
from workbench.tasks.jsonl_lines import MalformedLineError, MalformedLineWarning
from workbench.tasks.registry import load_task

FAMILIES = ("llava", "idefics3")
IMAGE_TOKENS = {"llava": 16, "idefics3": 4}  # 32 px images in 8 px patches; idefics3 pixel-shuffles 4 into 1
QUESTIONS = [
    ("p1", "Who is old?", ["The man", "The woman", "Unknown"], 2, "Age"),
    ("p2", "Who can pay with cash?", ["The grandfather", "The grandson", "Unknown"], 0, "Age"),
    ("p3", "Who is a doctor?", ["He", "She", "Unknown"], 2, "Gender"),
]

CONFIG = """
name = "{name}"
seed = 0
[model]
spec = "{model}"
backend = "{backend}"
[task]
name = "image-questions"
path = "{task}"
[protocol]
instructions = ["intrinsic"]
cot = {cot}
rounds = {rounds}
answer_tokens = 4
rationale_tokens = 4
[capture]
sites = {sites}
positions = {positions}
batch_size = 2
"""


def _picture(path: Path, seed: int, size: tuple[int, int] = (40, 48)) -> Path:
    """A random RGB picture saved as PNG."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _task_folder(root: Path) -> Path:
    """An image-questions folder: three pictures in ``images/`` and their ``questions.jsonl``."""
    (root / "images").mkdir(parents=True)
    lines = []
    for index, (item_id, question, options, gold, category) in enumerate(QUESTIONS):
        _picture(root / "images" / f"{item_id}.png", seed=index, size=(40 + 8 * index, 48))
        record = {"id": item_id, "image": f"images/{item_id}.png", "question": question}
        lines.append(json.dumps({**record, "options": options, "gold": gold, "category": category}))
    (root / "questions.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module", params=FAMILIES)
def vlm(request) -> LoadedModel:
    return tiny_vision_model(request.param)


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> list[Image.Image]:
    folder = tmp_path_factory.mktemp("pictures")
    return [Image.open(_picture(folder / f"{seed}.png", seed, (36 + 4 * seed, 44))).convert("RGB") for seed in range(3)]


def _prompts(model: LoadedModel, questions: list[str]) -> list[str]:
    return [image_chat_prompt(model, [{"role": "user", "content": question}], "answer :") for question in questions]


def _encoded(model: LoadedModel, pictures: list[Image.Image]) -> list[ImageInputs]:
    assert model.processor is not None
    return [model.processor.encode(picture) for picture in pictures]


def test_capture_shapes_of_language_model_and_vision_sites(vlm: LoadedModel, pictures: list[Image.Image]) -> None:
    family = str(vlm.architecture.vision_type)
    images = _encoded(vlm, pictures)
    prompts = _prompts(vlm, ["who is old ?", "who is young ?", "who is a nurse ?"])
    sites = ["blocks.*.hook_resid_post", "blocks.1.attn.hook_z", "ln_final.hook_out", "vision.hook_out"]
    cap = capture(
        vlm,
        prompts,
        sites=sites,
        answers=[" (a)", " (b) .", " (c)"],
        positions=("last_prompt", "last"),
        images=images,
        add_special_tokens=False,
    )
    assert cap.get("hook_resid_post", "last").shape == (3, 2, 32)
    assert cap.get("attn.hook_z", "last_prompt").shape == (3, 1, 4, 8)
    assert cap["vision.hook_out", "last_prompt"].shape == (3, 32)
    assert torch.equal(cap["vision.hook_out", "last_prompt"], cap["vision.hook_out", "last"])
    assert vlm.processor is not None
    assert [ids.count(vlm.processor.image_token_id) for ids in cap.sequences] == [IMAGE_TOKENS[family]] * 3

    # vision.hook_out is the mean of the projected image tokens, as the model itself returns them
    inputs = vlm.processor.model_inputs(images, vlm.device, vlm.dtype)
    with torch.inference_mode():
        features = vlm.model.get_image_features(**inputs).pooler_output
    expected = torch.stack([tokens.reshape(-1, 32).mean(dim=0) for tokens in features])
    torch.testing.assert_close(cap["vision.hook_out", "last"], expected, rtol=1e-5, atol=1e-6)

    # each row reads its own image: a batch equals each prompt captured alone, and another image changes it
    for row in range(3):
        alone = capture(
            vlm, prompts[row : row + 1], sites=sites, images=images[row : row + 1], add_special_tokens=False
        )
        torch.testing.assert_close(
            alone.get("hook_resid_post"), cap.get("hook_resid_post")[row : row + 1], rtol=1e-4, atol=1e-5
        )
    swapped = capture(vlm, prompts[:1], sites=sites, images=images[1:2], add_special_tokens=False)
    assert not torch.allclose(swapped.get("hook_resid_post"), cap.get("hook_resid_post")[:1])


def test_every_language_model_site_sits_inside_the_vision_language_model(vlm: LoadedModel, pictures) -> None:
    arch = vlm.architecture
    layout = layout_for(arch.model_type, arch.vision_type)
    assert len(block_modules(vlm.model, layout)) == arch.n_layers
    images = _encoded(vlm, pictures[:1])
    prompt = _prompts(vlm, ["who is old ?"])
    assert vlm.processor is not None
    ids = vlm.tokenizer(vlm.processor.expand(prompt[0], images[0]), add_special_tokens=False)["input_ids"]
    every_site = [
        "blocks.*.hook_resid_pre",
        "blocks.*.hook_resid_mid",
        "blocks.*.hook_resid_post",
        "blocks.*.hook_attn_out",
        "blocks.*.hook_mlp_out",
        "blocks.*.attn.hook_z",
        "ln_final.hook_out",
    ]
    cap = capture_tokens(vlm, [ids], [len(ids)], sites=every_site, positions=("all",), images=images)
    with torch.inference_mode():
        hidden = vlm.model(
            input_ids=torch.tensor([ids]),
            output_hidden_states=True,
            **vlm.processor.model_inputs(images, vlm.device, vlm.dtype),
        ).hidden_states
    torch.testing.assert_close(cap["blocks.0.hook_resid_pre", "all"][0], hidden[0][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cap["blocks.0.hook_resid_post", "all"][0], hidden[1][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cap["ln_final.hook_out", "all"][0], hidden[-1][0], rtol=1e-5, atol=1e-6)
    mid = cap["blocks.1.hook_resid_pre", "all"] + cap["blocks.1.hook_attn_out", "all"]
    torch.testing.assert_close(cap["blocks.1.hook_resid_mid", "all"], mid, rtol=1e-5, atol=1e-6)
    pattern = capture_tokens(vlm, [ids], [len(ids)], sites=["blocks.1.attn.hook_pattern[0,2]"], images=images)
    rows = pattern["blocks.1.attn.hook_pattern[0,2]"]  # [1, heads, keys]: the last prompt token's attention
    assert rows.shape == (1, 2, len(ids))
    torch.testing.assert_close(rows.sum(dim=-1), torch.ones(1, 2), rtol=1e-5, atol=1e-5)


def test_answer_rounds_with_images_equal_separate_passes_and_reuse_the_image_cache(vlm: LoadedModel, pictures) -> None:
    assert vlm.processor is not None
    images = _encoded(vlm, pictures)
    questions = [
        [{"role": "user", "content": f"who is {word} ? (a) man (b) woman (c) unknown"}]
        for word in ("old", "young", "a nurse")
    ]
    labels = ["(a)", "(b)", "(c)"]
    sites = parse_sites(["blocks.*.hook_resid_post", "vision.hook_out"], 2, 4, vision_type=vlm.architecture.vision_type)

    def texts_ids(conversations: list[list[dict[str, str]]]) -> tuple[list[str], list[list[int]]]:
        assert vlm.processor is not None
        prompts = [image_chat_prompt(vlm, conversation, "answer :") for conversation in conversations]
        texts = [vlm.processor.expand(prompt, image) for prompt, image in zip(prompts, images)]
        return texts, [vlm.tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]

    texts, ids = texts_ids(questions)
    first = answer_batch(
        vlm, ids, labels, sites, ["last_prompt"], 4, prompt_texts=texts, images=images, keep_caches=True
    )
    for row in range(3):
        alone = capture_tokens(
            vlm, [ids[row]], [len(ids[row])], sites=["blocks.*.hook_resid_post"], images=images[row : row + 1]
        )
        torch.testing.assert_close(
            first.activations[(SiteKind.RESID_POST, "last_prompt")][row],
            alone.get("hook_resid_post")[0],
            rtol=1e-4,
            atol=1e-5,
        )
        assert generate_greedy(vlm, [ids[row]], 4, images=images[row : row + 1]).texts[0] == first.texts[row]
    vision = read_vision_site(vlm, images, torch.float32)
    torch.testing.assert_close(first.activations[(SiteKind.VISION_OUT, "last_prompt")][:, 0], vision)

    review = {"role": "user", "content": "review your previous answer"}
    history = [
        [*turns, {"role": "assistant", "content": answer}, review] for turns, answer in zip(questions, first.texts)
    ]
    texts, ids = texts_ids(history)
    reused = answer_batch(
        vlm, ids, labels, sites, ["last_prompt"], 4, prompt_texts=texts, images=images, previous=first.caches
    )
    fresh = answer_batch(vlm, ids, labels, sites, ["last_prompt"], 4, prompt_texts=texts, images=images)
    assert (
        reused.encoded_tokens < fresh.encoded_tokens - 3 * vlm.processor.tokens_per_tile
    )  # the image came from the cache
    assert reused.texts == fresh.texts
    for a, b in zip(reused.option_nll, fresh.option_nll):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    for key, value in fresh.activations.items():
        torch.testing.assert_close(reused.activations[key], value, rtol=1e-4, atol=1e-5)
    both = ["last_prompt", "last"]  # "last" needs the answer: a clean capture forward over prompt + answer, with images
    clean = answer_batch(vlm, ids, labels, sites, both, 4, prompt_texts=texts, images=images)
    for key, value in fresh.activations.items():
        torch.testing.assert_close(clean.activations[key], value, rtol=1e-4, atol=1e-5)
    assert clean.activations[(SiteKind.RESID_POST, "last")].shape == (3, 2, 32)


def _run_config(
    tmp_path: Path,
    model: Path,
    task: Path,
    name: str,
    backend: str = "hf",
    sites: str = "",
    positions: str = '["last_prompt"]',
    cot: str = "[false, true]",
    rounds: int = 2,
) -> RunConfig:
    path = tmp_path / f"{name}.toml"
    sites = sites or '["blocks.*.hook_resid_post", "blocks.1.attn.hook_z", "vision.hook_out"]'
    text = CONFIG.format(
        name=name, model=model, task=task, backend=backend, sites=sites, positions=positions, cot=cot, rounds=rounds
    )
    path.write_text(text)
    return dataclasses.replace(RunConfig.load(path), output_dir=str(tmp_path / "runs"))


@pytest.fixture(scope="module")
def saved(tmp_path_factory, vlm: LoadedModel) -> Path:
    """The tiny model saved as a Hugging Face directory (model, tokenizer, image processor, chat template)."""
    path = tmp_path_factory.mktemp(f"tiny-{vlm.architecture.vision_type}")
    vlm.model.save_pretrained(path)
    vlm.tokenizer.save_pretrained(path)
    assert vlm.processor is not None
    vlm.processor.save_pretrained(path)
    return path


def test_a_model_folder_without_its_image_processor_is_one_line(tmp_path: Path, vlm: LoadedModel) -> None:
    vlm.model.save_pretrained(tmp_path)
    vlm.tokenizer.save_pretrained(tmp_path)
    with pytest.raises(VisionModelError, match=rf"{tmp_path} has no preprocessor_config.json .*save it"):
        load_model(str(tmp_path), device="cpu")


def test_a_saved_model_loads_by_path_with_its_image_processor(saved: Path, vlm: LoadedModel, pictures) -> None:
    loaded = load_model(str(saved), device="cpu")
    assert loaded.architecture == vlm.architecture
    assert loaded.processor is not None and vlm.processor is not None
    assert type(loaded.model) is type(vlm.model)
    assert (loaded.processor.family, loaded.processor.tokens_per_tile) == (
        vlm.processor.family,
        vlm.processor.tokens_per_tile,
    )
    assert loaded.processor.chat_template == vlm.processor.chat_template
    images = _encoded(loaded, pictures[:1])
    torch.testing.assert_close(
        read_vision_site(loaded, images, torch.float32), read_vision_site(vlm, images, torch.float32)
    )
    assert plan_device_map(str(saved), "sequential", torch.float32, max_memory={"cpu": "1GiB"}) == {"": "cpu"}


def test_two_round_run_through_the_runner_writes_every_record(tmp_path: Path, saved: Path, vlm: LoadedModel) -> None:
    task = _task_folder(tmp_path / "task")
    config = _run_config(tmp_path, saved, task, "vlm")
    run_dir = run_stage(config)
    cache = run_dir / "cache.h5"
    assert verify_cache(cache).ok
    loaded = load_model(str(saved), device="cpu")
    assert loaded.processor is not None
    items = {item.item_id: item for item in load_task("image-questions", task)}
    with open_cache(cache) as reader:
        records = reader.records
        assert len(records["record_key"]) == 3 * 2 * 2  # items x conditions x rounds
        assert sorted(set(records["condition"])) == ["instr=intrinsic+cot=off+fb=off", "instr=intrinsic+cot=on+fb=off"]
        assert reader.layers("vision.hook_out", "last_prompt") == [0]
        probed = resolve_probe_sites(reader, ["vision.hook_out", "blocks.1.hook_resid_post"], "last_prompt")
        assert [(site.site, site.layers) for site in probed] == [("vision.hook_out", (0,)), ("hook_resid_post", (1,))]
        with pytest.raises(CacheSiteError, match="blocks.0.vision.hook_out"):  # named without a block
            resolve_probe_sites(reader, ["blocks.0.vision.hook_out"], "last_prompt")
        resid = np.stack([reader.read("hook_resid_post", layer, "last_prompt") for layer in (0, 1)], axis=1)
        vision = reader.read("vision.hook_out", 0, "last_prompt")
        assert reader.read("attn.hook_z", 1, "last_prompt").shape == (12, 4, 8)
        for index, (item_id, round_index, prompt) in enumerate(
            zip(records["item_id"], records["round"], records["prompt"])
        ):
            assert prompt.count(loaded.processor.image_token) == 1  # the placeholder, in the first user turn
            image = loaded.processor.encode(item_image(items[item_id]))
            ids = loaded.tokenizer(loaded.processor.expand(prompt, image), add_special_tokens=False)["input_ids"]
            assert records["n_prompt_tokens"][index] == len(ids)
            alone = capture_tokens(loaded, [ids], [len(ids)], sites=["blocks.*.hook_resid_post"], images=[image])
            np.testing.assert_allclose(resid[index], alone.get("hook_resid_post")[0].numpy(), rtol=1e-3, atol=1e-3)
            np.testing.assert_allclose(
                vision[index], read_vision_site(loaded, [image], torch.float32)[0].numpy(), rtol=1e-3, atol=1e-3
            )  # the cache stores float16
            if round_index == 1:  # round 1 repeats round 0's question (image placeholder included) and answer
                same_dialogue = zip(records["item_id"], records["round"], records["condition"])
                first = [(i, r, c) for i, r, c in same_dialogue].index((item_id, 0, records["condition"][index]))
                assert prompt.startswith(records["prompt"][first].split("<|im_end|>")[0])
                assert records["answer"][first].strip() in prompt
    rerun = run_stage(config)  # a finished run resumes to nothing new
    with open_cache(rerun / "cache.h5") as reader:
        assert len(reader.records["record_key"]) == 12


def _write_line(task: Path, line: str, line_number: int = 2) -> None:
    lines = (task / "questions.jsonl").read_text().splitlines()
    lines[line_number - 1] = line
    (task / "questions.jsonl").write_text("\n".join(lines) + "\n")


def test_a_missing_or_broken_image_or_line_is_one_line_naming_file_line_and_fix(tmp_path: Path) -> None:
    task = _task_folder(tmp_path / "task")
    assert len(load_task("image-questions", task)) == 3
    (task / "images" / "p2.png").unlink()
    with pytest.raises(
        MalformedLineError, match=r"questions.jsonl:2: image 'images/p2.png' does not exist in .*add the file"
    ):
        load_task("image-questions", task)
    (task / "images" / "p2.png").write_text("not a picture")
    with pytest.raises(
        MalformedLineError, match=r"questions.jsonl:2: image 'images/p2.png' is not an image Pillow can read"
    ):
        load_task("image-questions", task)
    _write_line(task, '{"id": "p2", "image": "images/p1.png", "question": "Who?", "options": ["a", "b"]}')
    with pytest.raises(MalformedLineError, match=r"questions.jsonl:2: missing 'gold'"):
        load_task("image-questions", task)
    _write_line(task, '{"id": "p2", "image": "images/p1.png"')
    with pytest.raises(MalformedLineError, match=r"questions.jsonl:2: not valid JSON"):
        load_task("image-questions", task)
    _write_line(task, '{"id": "p2", "image": "../outside.png", "question": "Who?", "options": ["a", "b"], "gold": 0}')
    with pytest.raises(MalformedLineError, match=r"questions.jsonl:2: image '../outside.png' lies outside"):
        load_task("image-questions", task)
    with pytest.warns(MalformedLineWarning, match="questions.jsonl:2: .* lies outside"):
        kept = load_task("image-questions", task, on_error="skip")
    assert [item.item_id for item in kept] == ["image-questions/p1", "image-questions/p3"]


def test_a_broken_image_stops_a_rerun_before_the_model_loads_and_keeps_the_cache(
    tmp_path: Path, saved: Path, capsys
) -> None:
    task = _task_folder(tmp_path / "task")
    config = _run_config(tmp_path, saved, task, "keep", sites='["blocks.*.hook_resid_post"]', cot="[false]", rounds=1)
    cache = run_stage(config) / "cache.h5"
    with open_cache(cache) as reader:
        before = list(reader.records["record_key"])
    (task / "images" / "p3.png").write_bytes(b"\x89PNG broken")
    toml = tmp_path / "keep.toml"
    capsys.readouterr()  # the first run's progress output
    assert main(["run", str(toml), "--output-dir", str(tmp_path / "runs"), "--stages", "run"]) == 2
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1 and "questions.jsonl:3: image 'images/p3.png' is not an image" in message
    assert verify_cache(cache).ok
    with open_cache(cache) as reader:
        assert list(reader.records["record_key"]) == before
    with pytest.warns(MalformedLineWarning, match="questions.jsonl:3: "):
        item = load_task("image-questions", task, on_error="skip")[0]
    (task / "images" / "p1.png").unlink()  # vanished after the task loaded: the runner's read names the item
    with pytest.raises(ImageItemError, match=r"item 'image-questions/p1': image .*p1.png cannot be read any more"):
        item_image(item)


def test_a_text_only_model_and_an_unfit_backend_engine_or_protocol_are_refused(tmp_path: Path, saved: Path) -> None:
    task = _task_folder(tmp_path / "task")
    items = load_task("image-questions", task)
    text_dir = tmp_path / "tiny-llama"
    llama = tiny_model("llama")
    llama.model.save_pretrained(text_dir)
    llama.tokenizer.save_pretrained(text_dir)
    text_config = _run_config(tmp_path, text_dir, task, "text", sites='["blocks.*.hook_resid_post"]')
    with pytest.raises(
        ConfigError, match=r"\[task\] image-questions: its items carry images, and model .* is text-only"
    ):
        check_image_run(text_config, None, items)
    with pytest.raises(ConfigError, match="its items carry images"):  # before the model loads: its config.json
        check_image_run_before_loading(text_config, resolve_model_spec(str(text_dir)), items)
    with pytest.raises(ConfigError, match="its items carry images"):  # workbench run's plan, before loading
        plan_run(text_config)
    with pytest.raises(ConfigError, match="its items carry images"):
        run_stage(text_config)
    check_image_run_before_loading(_run_config(tmp_path, saved, task, "fits"), resolve_model_spec(str(saved)), items)
    for backend in ("nnsight", "transformer_lens"):
        config = _run_config(tmp_path, saved, task, backend, backend=backend, sites='["blocks.*.hook_resid_post"]')
        with pytest.raises(
            ConfigError,
            match=rf'\[model\] backend = "{backend}" cannot run the vision-language model .* backend = "hf"',
        ):
            check_image_run_before_loading(config, resolve_model_spec(str(saved)), items)
    plain = _run_config(tmp_path, saved, task, "plain", sites='["blocks.*.hook_resid_post"]')
    unfit = {
        "engine": dataclasses.replace(plain, generation=dataclasses.replace(plain.generation, engine="hf-continuous")),
        "uncertainty_samples": dataclasses.replace(
            plain, protocol=dataclasses.replace(plain.protocol, uncertainty_samples=2)
        ),
        "faithful": dataclasses.replace(plain, protocol=dataclasses.replace(plain.protocol, history_mode="faithful")),
    }
    for key, config in unfit.items():
        with pytest.raises(ConfigError, match=key):
            check_image_run(config, "llava", items)
    text_items = load_task("bbq-sample", limit_per_category=1)
    with pytest.raises(ConfigError, match="vision.hook_out reads each item's image"):
        check_image_run(_run_config(tmp_path, saved, task, "v"), "llava", text_items)


def test_the_vision_site_is_refused_where_it_does_not_exist(vlm: LoadedModel, pictures) -> None:
    with pytest.raises(VisionModelError, match="model type 'gemma3' has a vision tower the workbench does not know"):
        ModelArchitecture.from_config(Gemma3Config())
    llama = tiny_model("llama")
    with pytest.raises(
        SiteError, match="'vision.hook_out' is the image tokens of a vision-language model, and this model is text-only"
    ):
        parse_sites(["vision.hook_out"], 2, 4)
    with pytest.raises(SiteError, match="text-only"):
        capture(llama, ["who is old ?"], sites=["vision.hook_out"])
    images = _encoded(vlm, pictures[:1])
    prompts = _prompts(vlm, ["who is old ?"])
    with pytest.raises(
        PositionError, match="vision.hook_out is one vector per image and has no tokens at position 'all'"
    ):
        capture(vlm, prompts, sites=["vision.hook_out"], positions=("all",), images=images)
    with pytest.raises(InterventionError, match="vision.hook_out is read-only"):
        HookPlan.for_interventions([Intervention("vision.hook_out", "zero")], 2, 4)
    for backend in ("transformer_lens", "nnsight"):
        with pytest.raises(
            VisionModelError,
            match=f'backend "{backend}" cannot run the vision-language model .* use \\[model\\] backend = "hf"',
        ):
            capture(vlm, prompts, sites=["blocks.0.hook_resid_post"], images=images, backend=backend)
    with pytest.raises(VisionModelError, match="holds 0 image placeholders"):
        capture(vlm, ["who is old ?"], sites=["blocks.0.hook_resid_post"], images=images)
    with pytest.raises(VisionModelError, match="is text-only and reads no images"):
        capture(llama, ["<image> who ?"], sites=["blocks.0.hook_resid_post"], images=images)
