"""Words -> wishes: how `progan describe` understands "a round face with red hair and blue eyes".

A description is split into clauses (at commas, "and", "with", "but", ...). In each clause:

- a colour or shape word ("red", "ginger", "round", "chubby") picks a category of a measured
  trait; the noun of its clause ("hair", "eyes", "face", "skin") says which trait when the word
  could belong to several ("brown hair" / "brown eyes"); a word that fits one trait only
  ("ginger", "blue", "chubby") needs no noun;
- a scalar trait word ("smiling", "glasses", "bearded", "open mouth") asks for that trait; its
  antonyms ("serious", "clean-shaven", "closed mouth") ask for its absence;
- "no", "not", "without", "non", "never" negate the next wish of the clause; "very", "extremely"
  strengthen it, "slightly", "a bit" soften it (see INTENSITY);
- with learned attributes (`describe --attributes FILE`) or a conditional model's labels, their
  names ("Wavy_Hair" -> "wavy hair") and the CelebA synonyms below become words too. A model's
  labels win over everything (they are set directly instead of searched for); a measured trait
  wins over a learned attribute for a phrase that both understand ("black hair").

Every other word that carries meaning is reported back as unknown (with a hint when it was
ambiguous or named something not measured), never silently ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

# Measured traits (progan/faces/measure.py): category -> the words that ask for it.
CATEGORY_WORDS: dict[str, dict[str, tuple[str, ...]]] = {
    "face_shape": {
        "round": ("round", "rounded", "chubby", "full", "plump", "circular", "moon"),
        "oval": ("oval", "egg", "ovoid"),
        "long": ("long", "narrow", "elongated", "oblong", "thin", "slim", "slender"),
        "square": ("square", "squared", "angular", "boxy", "squarish"),
    },
    "eye_colour": {
        "blue": ("blue", "azure", "sapphire"),
        "green": ("green", "emerald"),
        "grey": ("grey", "gray", "silver", "steel"),
        "hazel": ("hazel", "amber"),
        "brown": ("brown", "chocolate", "chestnut"),
        "dark": ("dark", "black"),
    },
    "hair_colour": {
        "black": ("black", "dark", "raven", "jet"),
        "brown": ("brown", "brunette", "chestnut", "mousy"),
        "blond": ("blond", "blonde", "fair", "golden", "yellow", "flaxen"),
        "red": ("red", "ginger", "auburn", "copper", "redhead", "redheaded", "strawberry"),
        "grey_white": ("grey", "gray", "white", "silver", "greying", "graying", "silvery"),
        "bald": ("bald", "hairless", "balding", "shaved"),
    },
    "skin_tone": {
        "light": ("light", "fair", "pale", "porcelain"),
        "medium": ("medium", "olive", "tan", "tanned", "brown"),
        "dark": ("dark", "deep", "black", "ebony"),
    },
}

# The nouns that say which trait a colour or shape word belongs to.
NOUNS: dict[str, tuple[str, ...]] = {
    "face_shape": ("face", "faced", "head", "jaw", "jawline", "jawed", "features"),
    "eye_colour": ("eye", "eyes", "eyed", "iris", "irises"),
    "hair_colour": ("hair", "haired", "head", "hairstyle", "locks"),
    "skin_tone": ("skin", "skinned", "complexion"),
}

# Words that need no noun: they name one trait's category on their own, whatever else they
# could mean ("fair" alone is blond hair in a face description).
STANDALONE: dict[str, tuple[str, str]] = {
    "ginger": ("hair_colour", "red"),
    "redhead": ("hair_colour", "red"),
    "redheaded": ("hair_colour", "red"),
    "auburn": ("hair_colour", "red"),
    "blond": ("hair_colour", "blond"),
    "blonde": ("hair_colour", "blond"),
    "brunette": ("hair_colour", "brown"),
    "bald": ("hair_colour", "bald"),
    "balding": ("hair_colour", "bald"),
    "hairless": ("hair_colour", "bald"),
    "chubby": ("face_shape", "round"),
}

# Scalar traits: phrases asking for the trait, and antonym phrases asking for its absence.
SCALAR_WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "smile": (
        (
            "smile",
            "smiles",
            "smiling",
            "smiley",
            "grin",
            "grinning",
            "grins",
            "happy",
            "cheerful",
            "laughing",
        ),
        ("serious", "frowning", "frown", "stern", "sad", "grumpy", "unsmiling", "neutral"),
    ),
    "mouth_open": (
        ("open mouth", "mouth open", "open mouthed", "mouth opened", "gaping", "agape"),
        ("closed mouth", "mouth closed", "shut mouth", "mouth shut", "closed lips"),
    ),
    "eyeglasses": (
        ("glasses", "eyeglasses", "spectacles", "specs", "bespectacled", "eyewear"),
        (),
    ),
    "beard": (
        ("beard", "bearded", "stubble", "stubbly", "goatee", "whiskers"),
        ("clean shaven", "beardless", "shaven"),
    ),
}

NEGATORS = frozenset({"no", "not", "without", "non", "never", "nor", "nothing", "none"})
# Intensity words -> weight of the wish in the score (and, for scalar traits, its target).
INTENSITY: dict[str, float] = {
    "very": 2.0, "really": 2.0, "extremely": 2.0, "strongly": 2.0, "super": 2.0, "so": 2.0,
    "vivid": 2.0, "bright": 2.0, "deeply": 2.0, "intensely": 2.0, "bright red": 2.0,
    "slightly": 0.5, "somewhat": 0.5, "a bit": 0.5, "a little": 0.5, "mildly": 0.5, "barely": 0.5,
    "faintly": 0.5, "kind of": 0.5, "sort of": 0.5, "lightly": 0.5, "fairly": 0.5, "rather": 0.5,
}  # fmt: skip
# Words that carry no trait ("I want my character to have ...").
STOPWORDS = frozenset(
    """a an the and or but with of to in on at for by from as is are be being been was were has have
    having had i me my mine we our you your he him his she her hers they them their it its this that
    these those who whom which what want wants wanted would like likes need needs give show make find
    please some any one person people someone somebody character characters man's look looks looking
    also both either quite just too then than there here where very kind sort like lot lots pair set
    colour color coloured colored tone toned shape shaped type""".split()
)
CLAUSE_BREAKS = frozenset({"and", "with", "but", "plus", "also", "while", "yet"})
# "without" ends a clause and negates the next one.
NEGATING_BREAKS = frozenset({"without"})

# CelebA's 40 attribute names -> extra words (used only when a model or classifier has them).
ATTRIBUTE_SYNONYMS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "Male": (("male", "man", "boy", "guy", "masculine", "gentleman"),
             ("female", "woman", "girl", "lady", "feminine")),
    "Young": (("young", "youthful", "youth", "teen", "teenage", "teenager", "kid"),
              ("old", "elderly", "aged", "senior", "older", "mature")),
    "Smiling": (("smiling", "smile", "smiles", "grinning"), ("serious", "unsmiling")),
    "Bangs": (("bangs", "fringe"), ()),
    "Wavy_Hair": (("wavy hair", "wavy", "curly hair", "curly", "curls"), ()),
    "Straight_Hair": (("straight hair",), ()),
    "Heavy_Makeup": (("makeup", "make up", "heavy makeup", "made up"), ()),
    "Wearing_Lipstick": (("lipstick",), ()),
    "Wearing_Hat": (("hat", "cap"), ()),
    "Wearing_Earrings": (("earrings", "earring"), ()),
    "Wearing_Necklace": (("necklace",), ()),
    "Wearing_Necktie": (("tie", "necktie"), ()),
    "Mustache": (("mustache", "moustache", "moustached", "mustached"), ()),
    "No_Beard": (("clean shaven", "beardless"), ("beard", "bearded")),
    "Attractive": (("attractive", "handsome", "beautiful", "pretty", "good looking"), ("unattractive",)),
    "Chubby": (("chubby", "plump"), ()),
    "Double_Chin": (("double chin",), ()),
    "Pale_Skin": (("pale skin", "pale"), ()),
    "Rosy_Cheeks": (("rosy cheeks", "rosy", "red cheeks"), ()),
    "Big_Nose": (("big nose", "large nose"), ("small nose",)),
    "Pointy_Nose": (("pointy nose", "pointed nose"), ()),
    "Big_Lips": (("big lips", "full lips"), ("thin lips",)),
    "Bushy_Eyebrows": (("bushy eyebrows", "thick eyebrows", "bushy brows"), ("thin eyebrows",)),
    "Arched_Eyebrows": (("arched eyebrows", "arched brows"), ()),
    "Narrow_Eyes": (("narrow eyes", "squinting"), ()),
    "Bags_Under_Eyes": (("bags under eyes", "eye bags", "tired eyes"), ()),
    "High_Cheekbones": (("high cheekbones",), ()),
    "Receding_Hairline": (("receding hairline", "receding"), ()),
    "Sideburns": (("sideburns",), ()),
    "Oval_Face": (("oval face",), ()),
    "5_o_Clock_Shadow": (("five o'clock shadow", "5 o'clock shadow", "shadow"), ()),
    "Blurry": (("blurry", "blurred"), ("sharp",)),
    "Mouth_Slightly_Open": (("mouth slightly open",), ()),
}  # fmt: skip

TRAIT_DISPLAY = {
    "face_shape": "face shape",
    "eye_colour": "eye colour",
    "hair_colour": "hair colour",
    "skin_tone": "skin tone",
    "smile": "smile",
    "mouth_open": "open mouth",
    "eyeglasses": "glasses",
    "beard": "beard",
}
# The word a category gets in names of directions and in per-word scores: "red" -> "red hair".
CATEGORY_NOUN = {"face_shape": "face", "eye_colour": "eyes", "hair_colour": "hair", "skin_tone": "skin"}


@dataclass(frozen=True)
class Wish:
    """One thing the description asks for.

    source: "measured" (progan/faces/measure.py), "attribute" (a learned classifier) or "label"
    (a conditional model's label, set directly). trait: the trait, attribute or label name.
    value: the category of a category trait, None otherwise. weight: the intensity (1 plain,
    2 "very", 0.5 "slightly").
    """

    source: str
    trait: str
    value: str | None = None
    negated: bool = False
    weight: float = 1.0
    phrase: str = ""

    @property
    def key(self) -> tuple:
        return (self.source, self.trait, self.value, self.negated)

    @property
    def name(self) -> str:
        """A short label for this wish in tables and on grid cells: 'red hair', 'not smile'."""
        if self.source == "measured" and self.value is not None:
            base = self.value.replace("_", "/") if self.value == "grey_white" else self.value
            base = "bald" if self.value == "bald" else f"{base} {CATEGORY_NOUN[self.trait]}"
        else:
            base = TRAIT_DISPLAY.get(self.trait, self.trait) if self.source == "measured" else self.trait
        prefix = "not " if self.negated else ""
        strength = {2.0: "very ", 0.5: "slightly "}.get(self.weight, "")
        return f"{prefix}{strength}{base}"

    def understood(self) -> str:
        """'hair colour: red', 'smile: not', 'glasses: no', 'Male: yes (label set directly)'."""
        strength = {2.0: "very ", 0.5: "slightly "}.get(self.weight, "")
        if self.source == "measured":
            head = TRAIT_DISPLAY.get(self.trait, self.trait)
            if self.value is not None:
                return f"{head}: {'not ' if self.negated else ''}{strength}{self.value}"
            return f"{head}: {'no' if self.negated else (strength.strip() or 'yes')}"
        tail = " (label, set directly)" if self.source == "label" else " (learned attribute)"
        return f"{self.trait}: {'no' if self.negated else (strength.strip() or 'yes')}{tail}"


@dataclass
class Description:
    text: str
    wishes: list[Wish] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # words (with a hint) that nothing measures

    def summary(self) -> str:
        """'face shape: round; hair colour: red; eye colour: blue'."""
        return "; ".join(w.understood() for w in self.wishes) or "nothing"

    def unknown_line(self) -> str:
        return "no measurement for: " + ", ".join(self.unknown) if self.unknown else ""


def _tokens(text: str) -> list[str]:
    text = text.lower().replace("n't", " not").replace("’", "'")
    text = re.sub(r"(?<=[a-z])-(?=[a-z])", " ", text)  # blue-eyed -> blue eyed
    return re.findall(r"[a-z0-9']+|[,;.!?:()/]", text)


def _clauses(tokens: list[str]) -> list[tuple[list[str], bool]]:
    """Split at punctuation and joining words; (tokens, negated by a preceding 'without')."""
    out: list[tuple[list[str], bool]] = []
    current: list[str] = []
    negated = False
    for tok in tokens:
        if tok in CLAUSE_BREAKS or tok in NEGATING_BREAKS or not tok[0].isalnum():
            if current:
                out.append((current, negated))
            current, negated = [], tok in NEGATING_BREAKS
        else:
            current.append(tok)
    if current:
        out.append((current, negated))
    return out


def _phrase_table(
    entries: Iterable[tuple[str, str, bool]],
) -> dict[tuple[str, ...], tuple[str, bool]]:
    """(phrase, name, negated) -> {token tuple: (name, negated)}; first entry wins."""
    table: dict[tuple[str, ...], tuple[str, bool]] = {}
    for phrase, name, neg in entries:
        key = tuple(_tokens(phrase))
        if key and key not in table:
            table[key] = (name, neg)
    return table


def _name_phrases(names: Sequence[str]) -> list[tuple[str, str, bool]]:
    """A model's or classifier's label names as phrases, plus CelebA synonyms for CelebA names."""
    entries = []
    for name in names:
        entries.append((name.replace("_", " "), name, False))
        pos, neg = ATTRIBUTE_SYNONYMS.get(name, ((), ()))
        entries += [(p, name, False) for p in pos] + [(p, name, True) for p in neg]
    return entries


_SCALAR_TABLE = _phrase_table(
    [(p, t, False) for t, (pos, _) in SCALAR_WORDS.items() for p in pos]
    + [(p, t, True) for t, (_, neg) in SCALAR_WORDS.items() for p in neg]
)
_INTENSITY_TABLE = {tuple(_tokens(k)): v for k, v in INTENSITY.items()}
_NOUN_TRAITS: dict[str, list[str]] = {}
for _trait, _nouns in NOUNS.items():
    for _n in _nouns:
        _NOUN_TRAITS.setdefault(_n, []).append(_trait)
_ADJ_TRAITS: dict[str, dict[str, str]] = {}  # word -> {trait: category}
for _trait, _cats in CATEGORY_WORDS.items():
    for _cat, _words in _cats.items():
        for _w in _words:
            _ADJ_TRAITS.setdefault(_w, {}).setdefault(_trait, _cat)


def _match(tokens: list[str], i: int, table: dict[tuple[str, ...], object]) -> tuple[int, object] | None:
    """Longest phrase of `table` starting at tokens[i]: (length, value)."""
    for n in range(min(5, len(tokens) - i), 0, -1):
        hit = table.get(tuple(tokens[i : i + n]))
        if hit is not None:
            return n, hit
    return None


def _measured_clause(
    tokens: list[str], negated: bool, inherited: list[tuple[str, float, bool]]
) -> tuple[list[Wish], list[str], list[tuple[str, float, bool]]]:
    """Measured wishes of one clause, its unknown words, and its colour/shape words (for the
    next clause, so that "brown hair and eyes" gives brown eyes too)."""
    wishes: list[Wish] = []
    unknown: list[str] = []
    adjectives: list[tuple[int, str, float, bool]] = []  # (position, word, weight, negated)
    nouns = [(i, tok) for i, tok in enumerate(tokens) if tok in _NOUN_TRAITS]
    pending_neg, weight, i = negated, 1.0, 0
    while i < len(tokens):
        tok = tokens[i]
        hit = _match(tokens, i, _SCALAR_TABLE)
        if hit:
            n, (trait, neg) = hit
            phrase = " ".join(tokens[i : i + n])
            wishes.append(Wish("measured", trait, None, neg != pending_neg, weight, phrase))
            pending_neg, weight, i = negated, 1.0, i + n
            continue
        hit = _match(tokens, i, _INTENSITY_TABLE)
        if hit and i + hit[0] < len(tokens):
            weight, i = hit[1], i + hit[0]
            continue
        if tok in NEGATORS:
            pending_neg, i = True, i + 1
            continue
        if tok in _ADJ_TRAITS:
            adjectives.append((i, tok, weight, pending_neg))
            pending_neg, weight, i = negated, 1.0, i + 1
            continue
        if tok not in _NOUN_TRAITS and tok not in STOPWORDS and not tok.isdigit():
            unknown.append(tok)
        i += 1
    inherit = not adjectives and bool(nouns) and bool(inherited)
    if inherit:
        adjectives = [(-1, w, wt, negated) for w, wt, _ in inherited]
    for pos, word, wt, neg in adjectives:
        options = _ADJ_TRAITS[word]
        # The noun an adjective belongs to: the first fitting one after it, else the nearest before.
        after = [(p, t) for p, tok in nouns if p > pos for t in _NOUN_TRAITS[tok] if t in options]
        before = [(p, t) for p, tok in nouns if p < pos for t in _NOUN_TRAITS[tok] if t in options]
        if after or before:
            trait = after[0][1] if after else before[-1][1]
        elif word in STANDALONE:
            trait = STANDALONE[word][0]
        elif inherit:
            continue
        elif nouns:
            noun = nouns[0][1]
            trait_name = TRAIT_DISPLAY[_NOUN_TRAITS[noun][0]]
            cats = ", ".join(CATEGORY_WORDS[_NOUN_TRAITS[noun][0]])
            unknown.append(f"'{word} {noun}' ({trait_name} can be {cats})")
            continue
        elif len(options) == 1:
            trait = next(iter(options))
        else:
            which = " or ".join(f"'{word} {CATEGORY_NOUN[t]}'" for t in options)
            unknown.append(f"'{word}' (say {which})")
            continue
        wishes.append(Wish("measured", trait, options[trait], neg, wt, word))
    return wishes, unknown, [(w, wt, neg) for _, w, wt, neg in adjectives]


def understand(
    text: str, attributes: Sequence[str] = (), labels: Sequence[str] = (), prefer_attributes: bool = False
) -> Description:
    """Parse a description into wishes; `attributes` are a learned classifier's names and
    `labels` a conditional model's label names (both optional). A phrase the measured vocabulary
    reads word for word stays measured unless `prefer_attributes`: then the classifier judges
    every phrase it names (a classifier trained where the rules see little, e.g. eye colour on
    64x64 faces, whose irises are 3 pixels)."""
    desc = Description(text)
    label_table = _phrase_table(_name_phrases(labels))
    attr_table = _phrase_table(_name_phrases(attributes))
    inherited: list[tuple[str, float, bool]] = []
    for tokens, negated in _clauses(_tokens(text)):
        # Labels first (set directly), then learned attributes for phrases the measured
        # vocabulary does not understand on its own; the rest goes to the measured vocabulary.
        rest: list[str | None] = list(tokens)
        pending_neg = negated
        for source, table in (("label", label_table), ("attribute", attr_table)):
            if not table:
                continue
            i = 0
            while i < len(rest):
                tok = rest[i]
                if tok is None:
                    i += 1
                    continue
                hit = _match(rest, i, table)  # type: ignore[arg-type]
                if hit:
                    n, (name, neg) = hit
                    phrase = " ".join(rest[i : i + n])  # type: ignore[arg-type]
                    if source == "attribute" and not prefer_attributes:
                        got, unk, _ = _measured_clause(list(rest[i : i + n]), False, [])  # type: ignore[arg-type]
                        # The measured vocabulary keeps a phrase it reads word for word.
                        if got and not unk and not any(t in STOPWORDS for t in rest[i : i + n]):
                            i += n
                            continue
                    prev = rest[i - 1] if i else None
                    prev2 = rest[i - 2] if i > 1 else None
                    neg_here = pending_neg or prev in NEGATORS or (prev2 in NEGATORS and prev in INTENSITY)
                    w = INTENSITY.get(prev, 1.0) if prev else 1.0
                    wish = Wish(source, name, None, neg != neg_here, w, phrase)
                    if all(wish.key != x.key for x in desc.wishes):  # "woman ... not male" asks once
                        desc.wishes.append(wish)
                    for k in range(i, i + n):
                        rest[k] = None
                    # The modifiers belong to this wish: consume them too.
                    for k in (i - 1, i - 2):
                        if k >= 0 and rest[k] is not None and (rest[k] in NEGATORS or rest[k] in INTENSITY):
                            rest[k] = None
                    i += n
                    continue
                i += 1
        remaining = [t for t in rest if t is not None]
        wishes, unknown, adjectives = _measured_clause(remaining, negated, inherited)
        inherited = adjectives or inherited
        desc.wishes += [w for w in wishes if all(w.key != x.key for x in desc.wishes)]
        desc.unknown += [u for u in unknown if u not in desc.unknown]
    return desc
