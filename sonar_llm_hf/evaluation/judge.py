"""The paper's GPT-4o judge (the reference's `gpt_eval.py`): its exact prompts, a client for any OpenAI-compatible
endpoint, and the grades table.

The protocol has two turns per story. Turn 1: a system prompt and the story as `{prefix}***{continuation}`, asking
for a short assessment of the part after `***`. Turn 2: the assessment is appended as the assistant's message, and
the judge is asked for `Grammar: 8/10`, `Creativity: ...`, `Consistency: ...`, `Plot: ...` and an age group. The
grades are read line by line: the first `N/M` on a line naming a criterion gives N.

    export_judge_prompts(stories, "judge_prompts.jsonl")      # run the judge elsewhere, or:
    client = ChatClient("https://api.openai.com/v1", api_key=os.environ["OPENAI_API_KEY"])
    results = judge_stories(stories, client)                  # [{"review", "answer", "grades"}, ...]
    grade_table(results)                                      # means and counts per criterion

`stories` are `(prefix, continuation)` pairs; the reference passes the continuation as the text after the prefix
in the generated story, so it starts with a space (`continuation_text` builds it). The client uses only the standard
library (`urllib`), so the `openai` package is not needed; any server with `POST {base_url}/chat/completions` works.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

JUDGE_MODEL = "gpt-4o-2024-08-06"
JUDGE_MAX_TOKENS = 512
CRITERIA = ("grammar", "creativity", "consistency", "plot")

# The prompts of the reference, character for character (typos included: they are part of the protocol).
SYSTEM_PROMPT = (
    "Please act as an impartial judge and grade the student's completion in terms of grammar, creativity, "
    "consistency with the story's beginning and\nwhether the plot makes sense."
)
ASSESSMENT_PROMPT = (
    "There is the following exercise, the student is given a beginning of a story. The student needs to complete "
    "it into a full story.\nThe exercise tests the student's language abilities and creativity. The symbol *** "
    "marks the separator between the\nprescribed beginning and the student's completion:\n\n"
    "{prefix}***{continuation}\n\n"
    "Please provide your short general assessment (3-4 sentences) about the part written by the student (the one "
    "after the *** symbol).\nIs it gramatically correct? Is it consistent with the beginning of the story? Pay "
    "special attention to whether the\nstudent manages to complete the sentence which is split in the middle by the "
    "separator ***."
)
GRADING_PROMPT = (
    "Now, grade the student's story in terms of grammar, creativity, consistency and\nwhether the plot makes sense. "
    "Moreover, please provide your best guess of what the age of the student might be,\nas reflected from the "
    "completion. Choose from possible age groups: A: 3 or under. B: 4-5. C: 6-7. D: 8-9. E:\n10-12. F: 13-16.\n"
    "The output should be in the following format:\nGrammar: 8/10\nCreativity: 7/10\nConsistency: 7/10\nPlot: 6/10\n"
    "Age group: E (10-12)\nIt should not be any extra explanation included."
)
_FRACTION = re.compile(r"\d*/\d*")


def continuation_text(sentences: list[str]) -> str:
    """The generated part as the reference passes it: the full text minus the prefix, so " s1 s2 ..." ('' if none)."""
    return "".join(" " + sentence for sentence in sentences)


def assessment_messages(prefix: str, continuation: str) -> list[dict]:
    """Turn 1: the system prompt and the story with `***` between prefix and continuation."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": ASSESSMENT_PROMPT.format(prefix=prefix, continuation=continuation)},
    ]


def grading_messages(prefix: str, continuation: str, review: str) -> list[dict]:
    """Turn 2: turn 1, the judge's assessment, and the request for the grades."""
    return [
        *assessment_messages(prefix, continuation),
        {"role": "assistant", "content": review},
        {"role": "user", "content": GRADING_PROMPT},
    ]


def parse_grades(answer: str) -> dict[str, float]:
    """Grades from the judge's answer, read as the reference does: per line, the first criterion named (in the order
    grammar, creativity, consistency, plot) gets the number before the first `/`; lines without one are skipped and a
    later line overrides an earlier one. Missing criteria are absent (and counted apart by `grade_table`)."""
    grades: dict[str, float] = {}
    for line in answer.split("\n"):
        lowered = line.lower()
        criterion = next((c for c in CRITERIA if c in lowered), None)
        if criterion is None:
            continue
        fractions = _FRACTION.findall(line)
        try:
            grades[criterion] = float(fractions[0].split("/")[0])
        except (IndexError, ValueError):
            continue
    return grades


def export_judge_prompts(
    stories, path: str | Path, model: str = JUDGE_MODEL, max_tokens: int = JUDGE_MAX_TOKENS
) -> Path:
    """One JSON line per story: the turn-1 request (`model`, `max_tokens`, `messages`) and the turn-2 user message
    (`grading_prompt`) to append after the judge's reply, plus the story's `prefix` and `continuation`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for index, (prefix, continuation) in enumerate(stories):
            row = {"index": index, "model": model, "max_tokens": max_tokens,
                   "messages": assessment_messages(prefix, continuation), "grading_prompt": GRADING_PROMPT,
                   "prefix": prefix, "continuation": continuation}  # fmt: skip
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


class JudgeError(RuntimeError):
    """The endpoint failed or answered something that is not a chat completion."""


class ChatClient:
    """`POST {base_url}/chat/completions` with the standard library; retries HTTP 429/5xx with a growing pause."""

    def __init__(self, base_url: str, api_key: str | None = None, model: str = JUDGE_MODEL,
                 max_tokens: int = JUDGE_MAX_TOKENS, timeout: float = 120.0, retries: int = 3,
                 retry_wait: float = 1.0):  # fmt: skip
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"The judge endpoint must be an http(s) URL, got {base_url!r}.")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.api_key, self.model, self.max_tokens = api_key, model, max_tokens
        self.timeout, self.retries, self.retry_wait = timeout, retries, retry_wait

    def complete(self, messages: list[dict]) -> str:
        body = json.dumps({"model": self.model, "messages": messages, "max_tokens": self.max_tokens}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    payload = json.loads(response.read().decode("utf-8"))
                break
            except urllib.error.HTTPError as error:
                detail = error.read().decode("utf-8", "replace")[:500]
                if (error.code == 429 or error.code >= 500) and attempt < self.retries:
                    time.sleep(self.retry_wait * 2**attempt)
                    continue
                raise JudgeError(f"{self.url} answered HTTP {error.code}: {detail}") from None
            except urllib.error.URLError as error:
                raise JudgeError(f"Cannot reach the judge endpoint {self.url}: {error.reason}") from None
        try:
            return payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise JudgeError(f"{self.url} did not answer a chat completion: {json.dumps(payload)[:500]}") from None


def judge_stories(stories, client: ChatClient, progress_bar: bool = True) -> list[dict]:
    """Both turns for each `(prefix, continuation)`: `[{"review", "answer", "grades"}, ...]`."""
    stories = list(stories)
    iterable = stories
    if progress_bar:
        from tqdm.auto import tqdm

        iterable = tqdm(stories, desc="Judge")
    results = []
    for prefix, continuation in iterable:
        review = client.complete(assessment_messages(prefix, continuation))
        answer = client.complete(grading_messages(prefix, continuation, review))
        results.append({"review": review, "answer": answer, "grades": parse_grades(answer)})
    return results


def grade_table(results: list[dict]) -> dict[str, dict]:
    """Per criterion: the mean over the stories that have the grade, and how many do (`n`) out of all (`total`)."""
    table = {}
    for criterion in CRITERIA:
        values = [r["grades"][criterion] for r in results if criterion in r["grades"]]
        table[criterion] = {"mean": sum(values) / len(values) if values else None, "n": len(values),
                            "total": len(results)}  # fmt: skip
    return table


__all__ = [
    "ASSESSMENT_PROMPT",
    "CRITERIA",
    "ChatClient",
    "GRADING_PROMPT",
    "JUDGE_MODEL",
    "JudgeError",
    "SYSTEM_PROMPT",
    "assessment_messages",
    "continuation_text",
    "export_judge_prompts",
    "grade_table",
    "grading_messages",
    "judge_stories",
    "parse_grades",
]
