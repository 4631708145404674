"""Toxicity scorers: the offline default, Perspective (against a local server) and the lexicon."""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest

from workbench.toxicity.lexicon import LexiconScorer
from workbench.toxicity.perspective import PerspectiveConfig, PerspectiveError, PerspectiveScorer
from workbench.toxicity.profanity_check_scorer import ProfanityCheckScorer
from workbench.toxicity.scorer import ToxicityScoreError, ToxicityScorer, score_texts
from workbench.toxicity.scorer_config import (
    ToxicityConfigError,
    ToxicityScorerConfig,
    build_toxicity_scorer,
)

LDNOOBW = (
    Path(__file__).resolve().parents[3]
    / "shared"
    / "data"
    / "real_toxicity_prompts"
    / "list_of_naughty_and_bad_words.txt"
)
FAKE_KEY = "test-key-123"
SCORES = {"you are kind": 0.02, "you are an idiot": 0.91}


def test_profanity_check_scores_and_identity():
    scorer = ProfanityCheckScorer()
    assert isinstance(scorer, ToxicityScorer)
    result = score_texts(scorer, ["Thank you for your help today.", "fuck you, you stupid idiot"])
    assert result.scorer == "alt-profanity-check" and result.scorer_version == "1.9.1"
    assert result.values.shape == (2,)
    assert result.values[0] < 0.2 and result.values[1] > 0.8
    assert score_texts(scorer, []).values.shape == (0,)
    assert result.as_rows(["a", "b"])[1] == {
        "text_id": "b",
        "scorer": "alt-profanity-check",
        "scorer_version": "1.9.1",
        "toxicity": float(result.values[1]),
    }


class _OutOfRange:
    """A scorer that breaks the contract, to check that ``score_texts`` notices."""

    name = "broken"
    version = "0"

    def score(self, texts: list[str]) -> np.ndarray:
        return np.full(len(texts), 1.5)


def test_score_texts_enforces_the_contract():
    with pytest.raises(ToxicityScoreError, match="'broken' returned scores outside"):
        score_texts(_OutOfRange(), ["x"])


@pytest.fixture()
def perspective_server() -> Iterator[tuple[str, dict[str, object]]]:
    """A local stand-in for comments:analyze that answers like Perspective; throttles first."""
    state: dict[str, object] = {"throttle": 1, "bodies": [], "times": [], "keys": []}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            state["times"].append(time.monotonic())
            state["keys"].append(parse_qs(urlparse(self.path).query).get("key", [""])[0])
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state["bodies"].append(body)
            if state["throttle"] > 0:
                state["throttle"] -= 1
                self._send(429, {"error": {"code": 429, "message": "Quota exceeded"}}, {"Retry-After": "0"})
                return
            if body["comment"]["text"] == "bad request":
                self._send(
                    400, {"error": {"code": 400, "message": "Attribute TOXICITY does not support request languages"}}
                )
                return
            value = SCORES[body["comment"]["text"]]
            self._send(
                200,
                {
                    "attributeScores": {
                        "TOXICITY": {
                            "spanScores": [{"begin": 0, "end": 5, "score": {"value": value, "type": "PROBABILITY"}}],
                            "summaryScore": {"value": value, "type": "PROBABILITY"},
                        }
                    },
                    "languages": ["en"],
                    "detectedLanguages": ["en"],
                },
            )

        def _send(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1alpha1/comments:analyze", state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_perspective_scores_retries_and_rate_limit(perspective_server):
    endpoint, state = perspective_server
    scorer = PerspectiveScorer(
        PerspectiveConfig(api_key=FAKE_KEY, endpoint=endpoint, requests_per_minute=600, backoff_s=0.0)
    )
    result = score_texts(scorer, ["you are kind", "", "you are an idiot"])
    np.testing.assert_array_equal(result.values, [0.02, 0.0, 0.91])
    assert (result.scorer, result.scorer_version) == ("perspective:TOXICITY", "v1alpha1")
    # one throttled try + 2 texts; the empty text is never sent
    assert len(state["bodies"]) == 3
    assert state["bodies"][1] == {
        "comment": {"text": "you are kind"},
        "requestedAttributes": {"TOXICITY": {}},
        "languages": ["en"],
        "doNotStore": True,
    }
    assert state["keys"] == [FAKE_KEY] * 3
    gaps = np.diff(state["times"])
    assert np.all(gaps >= 0.1 - 0.01)  # 600 requests/min = one per 0.1 s


def test_perspective_gives_up_with_a_clear_error_without_leaking_the_key(perspective_server):
    endpoint, state = perspective_server
    state["throttle"] = 10
    scorer = PerspectiveScorer(
        PerspectiveConfig(api_key=FAKE_KEY, endpoint=endpoint, requests_per_minute=6000, max_retries=2)
    )
    with pytest.raises(PerspectiveError, match=r"failed after 3 attempt\(s\): HTTP 429") as caught:
        scorer.score(["you are kind"])
    assert FAKE_KEY not in str(caught.value)
    state["throttle"] = 0
    with pytest.raises(PerspectiveError, match=r"failed after 1 attempt\(s\): HTTP 400"):
        scorer.score(["bad request"])  # client errors are not retried


def test_perspective_needs_a_key(monkeypatch):
    monkeypatch.delenv("PERSPECTIVE_API_KEY", raising=False)
    with pytest.raises(PerspectiveError, match="set the PERSPECTIVE_API_KEY environment variable"):
        PerspectiveScorer(PerspectiveConfig())
    monkeypatch.setenv("PERSPECTIVE_API_KEY", FAKE_KEY)
    assert PerspectiveScorer(PerspectiveConfig()).name == "perspective:TOXICITY"


def test_lexicon_scorer_matches_whole_terms(tmp_path):
    word_list = tmp_path / "words.txt"
    word_list.write_bytes(b"ass\nbad word\n\n\xf0\x9f\x96\x95\n")
    scorer = LexiconScorer(word_list)
    assert scorer.name == "lexicon:words.txt"
    assert scorer.version == hashlib.sha256(b"ass\nbad word\n\n\xf0\x9f\x96\x95\n").hexdigest()[:12]
    texts = ["a class act", "kick ASS!", "a Bad  word", "a bad word.", "\U0001f595", "badwords"]
    np.testing.assert_array_equal(scorer.score(texts), [0.0, 1.0, 0.0, 1.0, 1.0, 0.0])


@pytest.mark.skipif(not LDNOOBW.is_file(), reason=f"{LDNOOBW} not found")
def test_lexicon_scorer_on_the_ldnoobw_list():
    scorer = LexiconScorer(LDNOOBW)
    assert len(scorer.terms) == 378
    np.testing.assert_array_equal(scorer.score(["a pleasant afternoon", "what a bastard"]), [0.0, 1.0])


def test_scorer_config(tmp_path):
    assert build_toxicity_scorer(ToxicityScorerConfig()).name == "alt-profanity-check"
    (tmp_path / "w.txt").write_text("darn\n", encoding="utf-8")
    lexicon = build_toxicity_scorer(
        ToxicityScorerConfig.from_dict({"kind": "lexicon", "word_list": str(tmp_path / "w.txt")})
    )
    assert lexicon.name == "lexicon:w.txt"
    with pytest.raises(ToxicityConfigError, match=r"\[toxicity\] has unknown key\(s\) scorer; valid keys: kind"):
        ToxicityScorerConfig.from_dict({"scorer": "perspective"})
    with pytest.raises(ToxicityConfigError, match="needs word_list"):
        ToxicityScorerConfig(kind="lexicon")
    with pytest.raises(ToxicityConfigError, match="is not one of profanity-check, perspective, lexicon"):
        ToxicityScorerConfig(kind="detoxify")


@contextlib.contextmanager
def _misbehaving_perspective(kind: str) -> Iterator[tuple[str, list[float]]]:
    """A local comments:analyze that hangs, drips, fails with 503 or answers garbage."""
    release = threading.Event()
    requests: list[float] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            requests.append(time.monotonic())
            with contextlib.suppress(OSError):
                if kind == "hang":
                    release.wait(10)
                elif kind == "drip":
                    self.send_response(200)
                    self.send_header("Content-Length", "30")
                    self.end_headers()
                    for byte in b'{"attributeScores": {}}      ':
                        if release.wait(0.1):
                            return
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                else:
                    status, body = {
                        "503": (503, b'{\n  "error": {\n    "message": "backend unavailable"\n  }\n}'),
                        "garbage": (200, b"\xff\xfe<html>oops</html>"),
                    }[kind]
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1alpha1/comments:analyze", requests
    finally:
        release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_perspective_error_is_a_value_error_for_the_cli():
    assert issubclass(PerspectiveError, ValueError)


@pytest.mark.parametrize("kind", ["hang", "drip"])
def test_perspective_hanging_or_dripping_server_costs_one_total_deadline(kind):
    with _misbehaving_perspective(kind) as (endpoint, requests):
        scorer = PerspectiveScorer(
            PerspectiveConfig(api_key=FAKE_KEY, endpoint=endpoint, requests_per_minute=6000, timeout_s=1.0)
        )
        started = time.monotonic()
        with pytest.raises(
            PerspectiveError, match=r"failed after 1 attempt\(s\): no complete answer within the 1 s"
        ) as caught:
            scorer.score(["you are kind"])
        elapsed = time.monotonic() - started
    assert elapsed < 1.0 + 0.6, elapsed
    assert len(requests) == 1 and "\n" not in str(caught.value) and FAKE_KEY not in str(caught.value)


def test_perspective_retries_stop_at_the_deadline_and_errors_are_one_line():
    with _misbehaving_perspective("503") as (endpoint, requests):
        config = PerspectiveConfig(api_key=FAKE_KEY, endpoint=endpoint, requests_per_minute=6000, backoff_s=0.01)
        with pytest.raises(
            PerspectiveError, match=r"failed after 6 attempt\(s\): HTTP 503 .*backend unavailable"
        ) as caught:
            PerspectiveScorer(config).score(["you are kind"])
        assert len(requests) == 6 and "\n" not in str(caught.value)
        slow = PerspectiveConfig(
            api_key=FAKE_KEY, endpoint=endpoint, requests_per_minute=6000, backoff_s=0.4, timeout_s=1.0
        )
        started = time.monotonic()
        with pytest.raises(PerspectiveError, match="would pass the deadline"):
            PerspectiveScorer(slow).score(["you are kind"])  # waits 0.4 + 0.8 s > 1 s: two attempts
        assert time.monotonic() - started < 1.0 and len(requests) == 6 + 2


def test_perspective_garbage_answer_is_a_one_line_error():
    with _misbehaving_perspective("garbage") as (endpoint, _):
        scorer = PerspectiveScorer(PerspectiveConfig(api_key=FAKE_KEY, endpoint=endpoint, requests_per_minute=6000))
        with pytest.raises(PerspectiveError, match=r"answer is not JSON \(it starts b'\\xff\\xfe<html>") as caught:
            scorer.score(["you are kind"])
    assert "\n" not in str(caught.value)
