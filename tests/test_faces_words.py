"""The describe vocabulary: synonyms, negation, intensity, several traits, unknown words (tables)."""

from __future__ import annotations

import pytest

from progan.faces.words import CATEGORY_WORDS, SCALAR_WORDS, understand


def _wishes(text, **kw):
    return [(w.source, w.trait, w.value, w.negated, w.weight) for w in understand(text, **kw).wishes]


M = "measured"
CASES = [
    # the sentence, and a longer wording of it
    ("a round face with red hair and blue eyes",
     [(M, "face_shape", "round", False, 1.0), (M, "hair_colour", "red", False, 1.0),
      (M, "eye_colour", "blue", False, 1.0)]),
    ("I want my character to have a round face, with red hair and blue eyes",
     [(M, "face_shape", "round", False, 1.0), (M, "hair_colour", "red", False, 1.0),
      (M, "eye_colour", "blue", False, 1.0)]),
    # synonyms
    ("ginger", [(M, "hair_colour", "red", False, 1.0)]),
    ("auburn hair", [(M, "hair_colour", "red", False, 1.0)]),
    ("a chubby face", [(M, "face_shape", "round", False, 1.0)]),
    ("a full face", [(M, "face_shape", "round", False, 1.0)]),
    ("blonde", [(M, "hair_colour", "blond", False, 1.0)]),
    ("brunette with hazel eyes",
     [(M, "hair_colour", "brown", False, 1.0), (M, "eye_colour", "hazel", False, 1.0)]),
    ("silver hair", [(M, "hair_colour", "grey_white", False, 1.0)]),
    ("gray eyes", [(M, "eye_colour", "grey", False, 1.0)]),
    ("a bald man", None),  # 'man' is unknown without attributes; bald is understood (checked below)
    ("pale skin", [(M, "skin_tone", "light", False, 1.0)]),
    ("grinning", [(M, "smile", None, False, 1.0)]),
    ("bespectacled", [(M, "eyeglasses", None, False, 1.0)]),
    ("bearded", [(M, "beard", None, False, 1.0)]),
    ("open mouth", [(M, "mouth_open", None, False, 1.0)]),
    ("open-mouthed", [(M, "mouth_open", None, False, 1.0)]),
    # the noun decides an ambiguous colour
    ("brown eyes", [(M, "eye_colour", "brown", False, 1.0)]),
    ("brown hair", [(M, "hair_colour", "brown", False, 1.0)]),
    ("dark skin", [(M, "skin_tone", "dark", False, 1.0)]),
    ("dark hair", [(M, "hair_colour", "black", False, 1.0)]),
    ("blue-eyed redhead", [(M, "eye_colour", "blue", False, 1.0), (M, "hair_colour", "red", False, 1.0)]),
    ("brown hair and eyes",
     [(M, "hair_colour", "brown", False, 1.0), (M, "eye_colour", "brown", False, 1.0)]),
    # negation
    ("no glasses", [(M, "eyeglasses", None, True, 1.0)]),
    ("not smiling", [(M, "smile", None, True, 1.0)]),
    ("isn't smiling", [(M, "smile", None, True, 1.0)]),
    ("without a beard", [(M, "beard", None, True, 1.0)]),
    ("red hair without glasses or beard",
     [(M, "hair_colour", "red", False, 1.0), (M, "eyeglasses", None, True, 1.0),
      (M, "beard", None, True, 1.0)]),
    ("serious", [(M, "smile", None, True, 1.0)]),
    ("clean-shaven", [(M, "beard", None, True, 1.0)]),
    ("closed mouth", [(M, "mouth_open", None, True, 1.0)]),
    ("not red hair", [(M, "hair_colour", "red", True, 1.0)]),
    # intensity
    ("very round face", [(M, "face_shape", "round", False, 2.0)]),
    ("extremely smiling", [(M, "smile", None, False, 2.0)]),
    ("slightly smiling", [(M, "smile", None, False, 0.5)]),
    ("a bit chubby", [(M, "face_shape", "round", False, 0.5)]),
    ("not very smiling", [(M, "smile", None, True, 2.0)]),
    # several traits in one sentence
    ("a long face, green eyes, blond hair, smiling, with glasses and a beard",
     [(M, "face_shape", "long", False, 1.0), (M, "eye_colour", "green", False, 1.0),
      (M, "hair_colour", "blond", False, 1.0), (M, "smile", None, False, 1.0),
      (M, "eyeglasses", None, False, 1.0), (M, "beard", None, False, 1.0)]),
]  # fmt: skip


@pytest.mark.parametrize("text,expected", [c for c in CASES if c[1] is not None])
def test_understood(text, expected):
    desc = understand(text)
    assert _wishes(text) == expected
    assert desc.unknown == []


UNKNOWN = [
    ("red hair and freckles", ["freckles"]),
    ("a bald man", ["man"]),
    ("a tall woman with blue eyes", ["tall", "woman"]),
    ("long hair", ["'long hair'"]),  # hair length is not measured
    ("blue hair", ["'blue hair'"]),  # not a measured hair colour
    ("brown", ["'brown'"]),  # hair, eyes or skin? asks instead of guessing
]


@pytest.mark.parametrize("text,words", UNKNOWN)
def test_unknown_words_are_named(text, words):
    desc = understand(text)
    assert [u.split(" (")[0] for u in desc.unknown] == words
    assert desc.unknown_line().startswith("no measurement for: ")


def test_summary_line():
    desc = understand("a round face with red hair and blue eyes, not smiling")
    assert desc.summary() == "face shape: round; hair colour: red; eye colour: blue; smile: no"
    assert [w.name for w in desc.wishes] == ["round face", "red hair", "blue eyes", "not smile"]


ATTRS = ["Male", "Young", "Wavy_Hair", "Black_Hair", "Smiling", "Bangs"]
ATTRIBUTE_CASES = [
    ("young", [("attribute", "Young", None, False, 1.0)]),
    ("an old man", [("attribute", "Young", None, True, 1.0), ("attribute", "Male", None, False, 1.0)]),
    ("a woman", [("attribute", "Male", None, True, 1.0)]),
    ("not male", [("attribute", "Male", None, True, 1.0)]),
    ("wavy hair", [("attribute", "Wavy_Hair", None, False, 1.0)]),
    ("with bangs", [("attribute", "Bangs", None, False, 1.0)]),
    # a phrase the measured vocabulary understands stays measured
    ("black hair", [(M, "hair_colour", "black", False, 1.0)]),
    ("smiling", [(M, "smile", None, False, 1.0)]),
]


@pytest.mark.parametrize("text,expected", ATTRIBUTE_CASES)
def test_learned_attribute_words(text, expected):
    assert _wishes(text, attributes=ATTRS) == expected
    assert understand(text, attributes=ATTRS).unknown == []


def test_a_classifier_judges_the_phrases_it_names_when_preferred():
    # On 64x64 faces an iris is 3 pixels: a classifier trained on eye colour sees what the rules
    # cannot, and --prefer-attributes lets it judge "blue eyes" although the rules read it.
    names = ["Black_Hair", "blue_eyes", "round_face"]
    assert _wishes("black hair", attributes=names) == [(M, "hair_colour", "black", False, 1.0)]
    got = understand("a round face with black hair and blue eyes, not smiling", names, prefer_attributes=True)
    assert [(w.source, w.trait, w.negated) for w in got.wishes] == [
        ("attribute", "round_face", False), ("attribute", "Black_Hair", False),
        ("attribute", "blue_eyes", False), (M, "smile", True),
    ]  # fmt: skip


def test_conditional_labels_win_and_are_set_directly():
    desc = understand("a smiling woman with red hair", labels=["Smiling", "Male"], attributes=ATTRS)
    assert [(w.source, w.trait, w.negated) for w in desc.wishes] == [
        ("label", "Smiling", False), ("label", "Male", True), ("measured", "hair_colour", False)
    ]  # fmt: skip
    assert "(label, set directly)" in desc.summary()


def test_vocabulary_covers_every_measured_trait():
    measure = pytest.importorskip("progan.faces.measure")
    for name, spec in measure.TRAITS.items():
        if name == "age_band":
            continue
        if spec.kind == "category":
            assert set(CATEGORY_WORDS[name]) == set(spec.categories), name
        else:
            assert name in SCALAR_WORDS, name
