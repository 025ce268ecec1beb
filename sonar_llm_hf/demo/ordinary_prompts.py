"""Ordinary prompts for the demo world, and the checks its continuations must pass (issue 25).

The 24 prompts are what a new user types: some in the world's sentence shapes with combinations the corpus may not
hold, some free-form, all in its vocabulary. `continuation_checks` scores one continuation: 2-15 sentences, no
sentence more than twice, ended by itself, no special sentence, and the story's character named and referred to
consistently (`agreement`).
"""

from __future__ import annotations

import re
from collections import Counter

from .story_world import CHARACTERS

ORDINARY_PROMPTS = [
    "Emma the duck loved her old book.",
    "Tom found a red ball in the park. He wanted to show it to his sister.",
    "Once upon a time, there was a little boy named Tom. Tom had a red ball.",
    "Once upon a time, there was a little fox named Finn. Finn loved his blue kite.",
    "Lily went to the beach with her shiny boat.",
    "Max the dog had a big drum. He went to play at the farm.",
    "Once upon a time, there was a little cat named Mia. It was a windy morning.",
    "Leo the lion took the green hat to the hill.",
    "Sara had a yellow flower. One day, Sara went to the garden with the flower.",
    "Once upon a time, there was a little bunny named Sam.",
    "Zoe the bird loved her new cake.",
    "Tim the frog went to the lake. At the lake, Tim met a happy pig.",
    "Once upon a time, there was a little bear named Jack. Jack had a soft blanket.",
    "Lucy the mouse lost her little box in the tall grass.",
    "Ben took the toy car to the town. Suddenly, the toy car broke into two pieces.",
    "Anna loved her red apple. The sky was blue and bright.",
    "Rosa went to play at the forest. She had a big kite.",
    "Finn the fox was very happy. He took his old boat to the lake.",
    "Once upon a time, there was a little girl named Anna. Suddenly, a big dog took her shiny ball.",
    "Mia the cat found a green book at the farm.",
    "Jack the bear played with a shy deer at the park.",
    "Sam had a new drum. The air was warm.",
    "Emma went to the beach. The wind blew her yellow hat away.",
    "Max loved his blue ball. One day, Max went to the hill with the ball.",
]
SPECIAL_SENTENCES = ("End of sequence.", "Begin of text.", "Begin of sequence.")
MIN_SENTENCES, MAX_SENTENCES, MAX_SAME = 2, 15, 2

_PRONOUNS = {"he": "he", "him": "he", "his": "he", "himself": "he", "she": "she", "her": "she", "hers": "she",
             "herself": "she"}  # fmt: skip
_NAMES = {name: pronoun for name, _, pronoun, _ in CHARACTERS}


def main_character(sentences: list[str]) -> str | None:
    """The first of the world's character names that the text uses."""
    for sentence in sentences:
        for word in re.findall(r"[A-Za-z]+", sentence):
            if word in _NAMES:
                return word
    return None


def agrees(sentence: str, character: str | None) -> bool:
    """True unless the sentence names another of the world's characters or uses a pronoun of the other gender.

    In the story world every character other than the main one is a noun phrase ("mom", "a shy deer"), so a second
    name or a pronoun of the other gender is a drift, as in "Finn the fox ... She went to play at the beach."."""
    if character is None:
        return True
    words = re.findall(r"[A-Za-z]+", sentence)
    if any(word in _NAMES and word != character for word in words):
        return False
    expected = _NAMES[character]
    return all(_PRONOUNS[w.lower()] == expected for w in words if w.lower() in _PRONOUNS)


def continuation_checks(prompt_sentences: list[str], sentences: list[str], finished: bool) -> dict:
    """The issue's targets for one continuation, each as a bool, plus the counts they come from."""
    counts = Counter(sentences)
    character = main_character(prompt_sentences)
    agreeing = sum(agrees(s, character) for s in sentences)
    checks = {
        "length_ok": MIN_SENTENCES <= len(sentences) <= MAX_SENTENCES,
        "no_triple": all(n <= MAX_SAME for n in counts.values()),
        "ended": bool(finished),
        "no_special": not any(s.strip() in SPECIAL_SENTENCES for s in sentences),
    }
    checks["ok"] = all(checks.values())
    checks.update(length=len(sentences), most_repeated=max(counts.values(), default=0), agreeing=agreeing)
    return checks


__all__ = ["ORDINARY_PROMPTS", "SPECIAL_SENTENCES", "agrees", "continuation_checks", "main_character"]
