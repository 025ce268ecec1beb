"""The paper's evaluation protocol: metrics equal the reference definitions, WordNet is required (never silently
absent), the protocols run on the packaged demo model, the judge client talks to a real local HTTP server, and
`sonar-llm evaluate` runs end to end on a local dataset.

METEOR needs WordNet: `apt-get install -y wordnet-base wordnet-sense-index` and
`python -m sonar_llm_hf.evaluation.wordnet --install`. Without it these tests fail with that instruction.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from sonar_llm_hf.demo.story_world import generate_corpus, story_to_text
from sonar_llm_hf.evaluation import (
    ChatClient,
    JudgeError,
    WordNetMissingError,
    assessment_messages,
    check_wordnet,
    grade_table,
    grading_messages,
    install_wordnet,
    judge_stories,
    main,
    nlg_scores,
    pair_scores,
    parse_grades,
    run_nlg,
    run_summarization,
    select_documents,
    token_cross_entropy,
)
from sonar_llm_hf.evaluation import metrics as metrics_module
from sonar_llm_hf.evaluation.wordnet import DEBIAN_WORDNET, INSTALL_HINT, lexnames_table

FIXTURES = Path(__file__).parent / "fixtures" / "metrics"


def _demo_path() -> str:
    from sonar_llm_hf import demo

    return demo.default_model_path()


@pytest.fixture(scope="module")
def wordnet():
    try:
        return check_wordnet()
    except WordNetMissingError as error:
        pytest.fail(str(error))


@pytest.fixture(scope="module")
def demo_model():
    from transformers import AutoModel

    return AutoModel.from_pretrained(_demo_path()).eval()


@pytest.fixture(scope="module")
def stories():
    return generate_corpus(6, seed=123)


def reference_pair_scores(prediction: str, reference: str) -> dict:
    """The reference's `evaluate_nlg.py` definitions, on the libraries directly (nltk's own WordNet loader)."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    from nltk.translate.meteor_score import meteor_score
    from rouge_score import rouge_scorer

    rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True).score(reference, prediction)["rougeL"].fmeasure
    return {
        "bleu": sentence_bleu([reference.split()], prediction.split(), smoothing_function=SmoothingFunction().method4),
        "rouge_l": rouge,
        "meteor": meteor_score([reference.split()], prediction.split()),
    }


# -- metrics ----------------------------------------------------------------------------------------------------


def test_nlg_scores_equal_the_reference_definitions(wordnet):
    pairs = [json.loads(line) for line in (FIXTURES / "pairs.jsonl").read_text().splitlines() if line.strip()]
    reference = json.loads((FIXTURES / "reference_scores.json").read_text())
    assert reference["num_pairs"] == len(pairs) >= 30
    ours = nlg_scores([p["prediction"] for p in pairs], [p["reference"] for p in pairs], return_pairs=True)
    for name in ("bleu", "rouge_l", "meteor"):
        assert ours[name] == pytest.approx(reference["means_x100"][name], abs=1e-9)
        for i, (a, b) in enumerate(zip(ours["pairs"], reference["pairs"])):
            assert a[name] == pytest.approx(b[name], abs=1e-9), (i, name, pairs[i])
    assert ours["count"] == len(pairs)


def test_meteor_matches_synonyms_through_wordnet(wordnet, monkeypatch):
    """Our METEOR (not nltk's on its own) uses the WordNet that `check_wordnet` found: the pinned score needs its
    synonyms, and the same pair scored by our code with a WordNet that knows none is lower."""
    assert pair_scores("the kitty sat on the rug", "the cat sat on the mat")["meteor"] == pytest.approx(0.625)

    class NoSynonyms:
        def synsets(self, *args, **kwargs):
            return []

    # (0.625 is reached by exact matches alone; "fixed"/"repaired" and "children"/"kids" need WordNet)
    prediction = "The teacher fixed the kite with some tape, and the children cheered loudly."
    reference = "The teacher repaired the kite using tape, and the kids cheered."
    with_wordnet = pair_scores(prediction, reference)["meteor"]
    assert with_wordnet == pytest.approx(0.7991622574955908, abs=1e-12)
    monkeypatch.setattr(metrics_module, "check_wordnet", NoSynonyms)
    metrics_module._scorers.cache_clear()
    try:
        without = pair_scores(prediction, reference)["meteor"]
    finally:
        metrics_module._scorers.cache_clear()
    assert without < with_wordnet - 0.1


def test_bad_pairs_are_clear_errors(wordnet):
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        nlg_scores(["a", "b"], ["a"])
    with pytest.raises(TypeError, match=r"`references\[0\]` is NoneType"):
        nlg_scores(["a"], [None])
    with pytest.raises(ValueError, match="No pairs"):
        nlg_scores([], [])


def test_missing_wordnet_is_an_error_with_the_instruction(monkeypatch, tmp_path):
    import nltk

    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    monkeypatch.delenv("NLTK_DATA", raising=False)
    metrics_module._scorers.cache_clear()
    try:
        with pytest.raises(WordNetMissingError) as caught:
            nlg_scores(["the kitty"], ["the cat"])
    finally:
        metrics_module._scorers.cache_clear()
    assert "apt-get install -y wordnet-base wordnet-sense-index" in str(caught.value)
    assert "python -m sonar_llm_hf.evaluation.wordnet --install" in str(caught.value)
    assert str(tmp_path) in str(caught.value)


def test_install_wordnet_from_the_debian_files(tmp_path):
    if not (DEBIAN_WORDNET / "index.sense").is_file():
        pytest.fail(f"Debian's WordNet is not installed.\n{INSTALL_HINT}")
    corpus = install_wordnet(tmp_path)
    assert corpus == tmp_path / "corpora" / "wordnet"
    lines = (corpus / "lexnames").read_text().splitlines()
    assert len(lines) == 45 and lines[0] == "00\tadj.all\t3" and lines[44] == "44\tadj.ppl\t3"
    assert lines[18] == "18\tnoun.person\t1" and lines[29] == "29\tverb.body\t2"
    man = Path("/usr/share/man/man5/lexnames.5WN.gz")
    if man.is_file():  # the table is the man page's
        import gzip

        rows = [line.split("\t") for line in gzip.open(man, "rt") if line[:2].isdigit() and "\t" in line]
        assert [(n, name.strip()) for n, name, *_ in rows] == [tuple(line.split("\t")[:2]) for line in lines]
    for name in ("data.noun", "index.sense", "verb.exc", "cntlist.rev"):  # copied (NLTK reads only its data path)
        assert (corpus / name).read_bytes() == (DEBIAN_WORDNET / name).read_bytes()
    # (that NLTK loads such a folder is what `wordnet` above proves: the installed copy was built the same way)
    assert lexnames_table().count("\n") == 45
    with pytest.raises(FileNotFoundError, match="apt-get install -y wordnet-base wordnet-sense-index"):
        install_wordnet(tmp_path / "x", source=tmp_path / "nowhere")


# -- protocols on the demo model --------------------------------------------------------------------------------


def test_select_documents_counts_what_it_leaves_out():
    # (sentencex reads a lone lowercase letter before a period, "b.", as an abbreviation: words here)
    texts = ["A bee. C dog.", "", None, " ".join(f"S{i} ox." for i in range(40)), "E fox. G hen. I jay.", "K elk."]
    documents, counts = select_documents(texts, limit=10, skip_last=1, max_sentences=32)
    assert documents == [["A bee.", "C dog."], ["E fox.", "G hen.", "I jay."]]
    assert counts == {"considered": 5, "not_text": 1, "empty": 1, "too_long": 1, "kept": 2}
    with pytest.raises(ValueError, match="No document"):
        select_documents(["", "  "])


def test_nlg_protocol_on_the_demo_model(demo_model, stories, tmp_path, wordnet):
    for prefix in ("short", "long"):
        path = tmp_path / f"{prefix}.jsonl"
        summary, records = run_nlg(demo_model, stories, prefix=prefix, batch_size=4, progress_bar=False,
                                   records_path=path)  # fmt: skip
        assert [json.loads(line) for line in path.read_text().splitlines()] == records
        assert summary["count"] == len(records) == len(stories) and summary["prefix"] == prefix
        # each record holds the model's own continuation of its prefix, scored by the reference's definitions (the
        # libraries called here directly, not through our metrics module)
        lengths = [2 if prefix == "short" else max(1, len(story) // 2) for story in stories]
        continued = demo_model.generate([story[:n] for story, n in zip(stories, lengths)], max_new_sentences=1)
        expected_scores = []
        for record, story, n, new in zip(records, stories, lengths, continued.sentences):
            assert record["prefix"] == " ".join(story[:n]) and record["reference"] == story[n]
            assert record["generation"] == (new[0] if new else "")
            expected_scores.append(reference_pair_scores(record["generation"], record["reference"]))
            assert record["scores"] == pytest.approx(expected_scores[-1], abs=1e-12)
        for name in ("bleu", "rouge_l", "meteor"):
            mean = 100 * sum(s[name] for s in expected_scores) / len(expected_scores)
            assert summary[name] == pytest.approx(mean, abs=1e-9)
        assert summary["empty_generation"] == sum(r["generation"] == "" for r in records)
        # the trained demo continues stories with story sentences
        assert summary["rouge_l"] > 20 and summary["empty_generation"] < len(stories)
    # one batch or three: the same generations
    _, again = run_nlg(demo_model, stories, prefix="long", batch_size=2, progress_bar=False)
    assert [r["generation"] for r in again] == [r["generation"] for r in records]


def test_token_cross_entropy_is_the_forward_loss_over_all_tokens(demo_model, stories):
    import torch

    from sonar_llm_hf.training.data import SonarLLMDataCollator, prepare_dataset

    texts = [story_to_text(s) for s in stories]
    result = token_cross_entropy(demo_model, texts, batch_size=2, progress_bar=False)
    assert result["num_documents"] == len(texts) and result["num_target_tokens"] > 0
    import datasets

    prepared = prepare_dataset(datasets.Dataset.from_dict({"text": texts}), demo_model, progress_bar=False)
    with torch.no_grad():
        out = demo_model(**SonarLLMDataCollator()([prepared[i] for i in range(len(prepared))]))  # one batch
    assert result["token_ce"] == pytest.approx(out.loss.item(), rel=1e-5)
    assert int(out.num_target_tokens) == result["num_target_tokens"]
    assert 0 < result["token_ce"] < 3  # the demo model was trained on this world
    assert demo_model.config.loss_type == "ce" and not demo_model.training


def test_summarization_generates_as_many_sentences_as_the_summary(demo_model, stories, tmp_path, wordnet):
    documents = [story_to_text(s[:4]) for s in stories[:3]]
    summaries = [stories[0][4], " ".join(stories[1][4:6]), stories[2][4]]
    summary, records = run_summarization(demo_model, documents, summaries, batch_size=2, progress_bar=False,
                                         records_path=tmp_path / "summ.jsonl")  # fmt: skip
    assert set(summary) >= {"rouge_l", "meteor", "count", "truncated_documents"} and "bleu" not in summary
    assert summary["count"] == 3 and len((tmp_path / "summ.jsonl").read_text().splitlines()) == 3
    from sonar_llm_hf import split_sentences

    for record, reference in zip(records, summaries):
        assert record["reference"] == reference
        assert len(split_sentences(record["generation"])) <= len(split_sentences(reference)) + 1
    with pytest.raises(ValueError, match="Example 0: the summary is empty"):
        run_summarization(demo_model, ["A b."], [""], progress_bar=False)


# -- the GPT-4o judge -------------------------------------------------------------------------------------------


def test_judge_prompts_and_parsing_equal_the_reference():
    reference = json.loads((FIXTURES / "judge_reference.json").read_text())
    for story in reference["stories"]:
        assert assessment_messages(story["prefix"], story["continuation"]) == story["turn1"]
        assert grading_messages(story["prefix"], story["continuation"], story["review"]) == story["turn2"]
    for case in reference["answers"]:
        assert parse_grades(case["answer"]) == case["grades"], case["answer"]


class _FakeJudge(BaseHTTPRequestHandler):
    requests: list = []
    fail_next = 0

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        if type(self).fail_next:
            type(self).fail_next -= 1
            self.send_response(503)
            self.end_headers()
            self.wfile.write(b"busy")
            return
        if body["model"] == "broken":
            self.send_response(400)
            self.end_headers()
            self.wfile.write(b'{"error": "bad model"}')
            return
        turn = len(body["messages"])
        story = body["messages"][1]["content"]
        grammar = 9 if "happy" in story else 4
        grades = f"Grammar: {grammar}/10\nCreativity: 6/10\nConsistency: 7/10\nPlot: 5/10\nAge group: C (6-7)"
        content = "A fine completion." if turn == 2 else grades
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_judge():
    server = HTTPServer(("127.0.0.1", 0), _FakeJudge)
    _FakeJudge.requests, _FakeJudge.fail_next = [], 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_judge_client_against_a_local_server(fake_judge):
    _FakeJudge.fail_next = 1  # one 503 first: retried
    client = ChatClient(fake_judge, api_key="sk-test", retry_wait=0.01)
    stories = [("Tom had a ball.", " He was happy."), ("Lily had a kite.", " It flew away.")]
    results = judge_stories(stories, client, progress_bar=False)
    assert [r["grades"]["grammar"] for r in results] == [9.0, 4.0]
    assert results[0]["review"] == "A fine completion." and results[0]["answer"].startswith("Grammar: 9/10")
    requests = _FakeJudge.requests
    assert len(requests) == 5 and all(r["path"] == "/v1/chat/completions" for r in requests)
    assert requests[0]["auth"] == "Bearer sk-test" and requests[1]["body"] == requests[0]["body"]
    assert requests[1]["body"] == {"model": "gpt-4o-2024-08-06", "max_tokens": 512,
                                   "messages": assessment_messages(*stories[0])}  # fmt: skip
    assert requests[2]["body"]["messages"] == grading_messages(*stories[0], "A fine completion.")
    table = grade_table(results)
    assert table["grammar"] == {"mean": 6.5, "n": 2, "total": 2} and table["plot"]["mean"] == 5.0
    with pytest.raises(JudgeError, match="HTTP 400"):
        ChatClient(fake_judge, model="broken").complete([{"role": "user", "content": "x"}])
    with pytest.raises(JudgeError, match="Cannot reach"):
        ChatClient("http://127.0.0.1:9/v1", retries=0, timeout=2).complete([])


# -- sonar-llm evaluate -----------------------------------------------------------------------------------------


def test_evaluate_cli_end_to_end(tmp_path, fake_judge, wordnet, capsys):
    data = tmp_path / "stories.jsonl"
    data.write_text("".join(json.dumps({"story": story_to_text(s)}) + "\n" for s in generate_corpus(5, seed=9)))
    out = tmp_path / "out"
    argv = ["--model", _demo_path(), "--dataset", str(data), "--text-column", "story", "--out", str(out),
            "--limit", "4", "--prefix", "both", "--tasks", "nlg,ce,judge", "--batch-size", "4", "--no-progress",
            "--judge-url", fake_judge]  # fmt: skip
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["documents"]["kept"] == 4
    assert set(results["nlg"]) == {"short", "long"} and results["nlg"]["short"]["count"] == 4
    assert results["token_ce"]["num_documents"] == 4
    assert results["judge"]["stories"] == 4 and results["judge"]["grades"]["creativity"]["mean"] == 6.0
    for name in ("nlg_short.jsonl", "nlg_long.jsonl", "judge_prompts.jsonl", "judge_results.jsonl"):
        assert len((out / name).read_text().splitlines()) == 4, name
    markdown = (out / "results.md").read_text()
    assert "| short | 4 |" in markdown and "Held-out token cross-entropy" in markdown and "Creativity" in markdown
    assert "| prefix | documents | BLEU | ROUGE-L | METEOR |" in capsys.readouterr().out

    # a save_to_disk folder with splits, and clear errors
    import datasets

    folder = tmp_path / "saved"
    validation = datasets.Dataset.from_dict({"text": [story_to_text(s) for s in generate_corpus(3, seed=1)]})
    train = datasets.Dataset.from_dict({"text": ["A b. C d. E f."]})
    datasets.DatasetDict({"validation": validation, "train": train}).save_to_disk(folder)
    base = ["--model", _demo_path(), "--dataset", str(folder), "--out", str(tmp_path / "o2"), "--no-progress"]
    assert main(base + ["--tasks", "nlg"]) == 2
    assert "choose one with --split" in capsys.readouterr().err
    assert main(base + ["--split", "validation", "--tasks", "nlg", "--limit", "2"]) == 0
    assert json.loads((tmp_path / "o2" / "results.json").read_text())["nlg"]["short"]["count"] == 2
    assert main(base + ["--split", "validation", "--text-column", "story"]) == 2
    assert "no text column 'story'" in capsys.readouterr().err
