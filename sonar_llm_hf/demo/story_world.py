"""A small generated story world, in the spirit of TinyStories, for the offline demo and tests.

Stories follow simple causal plots (a want, a problem, an attempt, help, a resolution, a feeling) with consistent
characters, pronouns, objects and places, so the next sentence is partly predictable from the story so far. The
vocabulary is a few hundred words; everything is deterministic from a seed. No sentence holds an abbreviation or a
quote, so a rule-based splitter recovers each story's sentences exactly.
"""

from __future__ import annotations

import random

CHARACTERS = [
    ("Tom", "boy", "he", "his"), ("Lily", "girl", "she", "her"), ("Max", "dog", "he", "his"),
    ("Mia", "cat", "she", "her"), ("Ben", "boy", "he", "his"), ("Sara", "girl", "she", "her"),
    ("Leo", "lion", "he", "his"), ("Anna", "girl", "she", "her"), ("Sam", "bunny", "he", "his"),
    ("Zoe", "bird", "she", "her"), ("Tim", "frog", "he", "his"), ("Emma", "duck", "she", "her"),
    ("Jack", "bear", "he", "his"), ("Lucy", "mouse", "she", "her"), ("Finn", "fox", "he", "his"),
    ("Rosa", "girl", "she", "her"),
]  # fmt: skip
HELPERS = [
    "mom",
    "dad",
    "grandma",
    "a kind old owl",
    "a friendly farmer",
    "a big brother",
    "the teacher",
    "a wise turtle",
]
ADJECTIVES = ["red", "blue", "shiny", "little", "big", "soft", "green", "yellow", "old", "new"]
OBJECTS = ["ball", "kite", "hat", "boat", "book", "cake", "box", "drum", "toy car", "flower", "apple", "blanket"]
PLACES = ["the park", "the garden", "the forest", "the beach", "the farm", "the hill", "the lake", "the town"]
FRIENDS = ["a small duck", "a happy pig", "a tiny ant", "a shy deer", "a little goat", "a brave cat"]
WEATHER = ["It was a sunny day.", "The sky was blue and bright.", "It was a windy morning.", "The air was warm."]
PROBLEMS = [
    ("the {obj} fell into the water", "{pro} could not reach it"),
    ("the {obj} got stuck in a tall tree", "{pro} was too small to get it"),
    ("the wind blew the {obj} away", "{pro} ran but could not catch it"),
    ("the {obj} broke into two pieces", "{pro} did not know how to fix it"),
    ("a big dog took the {obj}", "{pro} was scared of the dog"),
    ("the {obj} was lost in the tall grass", "{pro} looked everywhere for it"),
]
FIXES = [
    "{helper} used a long stick to get the {obj}.", "{helper} climbed up and brought the {obj} back.",
    "{helper} fixed the {obj} with some tape.", "{helper} found the {obj} behind a big rock.",
    "{helper} asked the dog nicely, and the dog gave the {obj} back.",
    "{helper} jumped into the water and got the {obj}.",
]  # fmt: skip
FEELINGS_BAD = ["{name} felt sad.", "{name} started to cry.", "{name} was very upset.", "{name} felt worried."]
FEELINGS_GOOD = ["{name} was very happy.", "{name} smiled a big smile.", "{name} felt proud and glad.",
                 "{name} laughed with joy."]  # fmt: skip
ENDINGS = [
    "From that day on, {name} always took good care of the {obj}.", "{name} said thank you to {helper}.",
    "They played together until the sun went down.", "{name} learned that it is good to ask for help.",
    "That night, {name} slept with the {obj} close by.", "{name} and {helper} went home for dinner.",
]  # fmt: skip


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def generate_story(rng: random.Random) -> list[str]:
    """One story as a list of sentences (4 to 12)."""
    name, kind, pro, pos = rng.choice(CHARACTERS)
    obj = f"{rng.choice(ADJECTIVES)} {rng.choice(OBJECTS)}"
    place, helper, friend = rng.choice(PLACES), rng.choice(HELPERS), rng.choice(FRIENDS)
    fill = dict(name=name, pro=pro, pos=pos, obj=obj, helper=helper)
    story = [f"Once upon a time, there was a little {kind} named {name}."]
    if rng.random() < 0.5:
        story.append(rng.choice(WEATHER))
    story.append(
        rng.choice(
            [f"{name} had a {obj}.", f"{name} loved {pos} {obj}.", f"{_cap(pos)} {obj} was {pos} favorite toy."]
        )
    )
    story.append(
        rng.choice(
            [
                f"One day, {name} went to {place} with the {obj.split()[-1]}.",
                f"{name} took the {obj} to {place}.",
                f"{_cap(pro)} went to play at {place}.",
            ]
        )
    )
    if rng.random() < 0.4:
        story.append(f"At {place}, {name} met {friend}.")
    cause, effect = rng.choice(PROBLEMS)
    story.append(_cap(f"suddenly, {cause.format(**fill)}."))
    story.append(_cap(effect.format(**fill)) + ".")
    story.append(rng.choice(FEELINGS_BAD).format(**fill))
    if rng.random() < 0.5:
        story.append(f"Then {helper} came to help.")
    story.append(_cap(rng.choice(FIXES).format(**fill)))
    story.append(rng.choice(FEELINGS_GOOD).format(**fill))
    story.extend(rng.sample(ENDINGS, k=rng.randint(0, 2)))
    return [s.format(**fill) for s in story][:12]


def generate_corpus(num_stories: int, seed: int = 0) -> list[list[str]]:
    rng = random.Random(seed)
    return [generate_story(rng) for _ in range(num_stories)]


def split_corpus(stories: list[list[str]], heldout_fraction: float = 0.1, seed: int = 0):
    """Deterministic train / held-out split; held-out stories are not repeated in training."""
    seen, unique = set(), []
    for story in stories:
        if tuple(story) not in seen:
            seen.add(tuple(story))
            unique.append(story)
    order = list(range(len(unique)))
    random.Random(seed).shuffle(order)
    cut = int(len(unique) * heldout_fraction)
    return [unique[i] for i in order[cut:]], [unique[i] for i in order[:cut]]


def story_to_text(story: list[str]) -> str:
    return " ".join(story)


def iter_sentences(stories):
    for story in stories:
        yield from story


def distinct_sentences(num_stories: int, seed: int, limit: int) -> list[str]:
    """The first `limit` distinct sentences of `generate_corpus(num_stories, seed)`, in order: a fixed set of
    sentences to compare two versions of a model on (fp32 against int8 or packed)."""
    return list(dict.fromkeys(iter_sentences(generate_corpus(num_stories, seed=seed))))[:limit]


if __name__ == "__main__":
    corpus = generate_corpus(20000)
    sentences = list(iter_sentences(corpus))
    words = {w.strip(".,").lower() for s in sentences for w in s.split()}
    print(f"{len(corpus)} stories, {len(sentences)} sentences, {len(set(sentences))} distinct, {len(words)} words")
    for story in corpus[:3]:
        print(story_to_text(story), "\n")
