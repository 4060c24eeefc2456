"""The closed vocabulary of Concord Scenes: shapes, colours, sizes, textures, relations.

Layout class ids are part of the dataset contract: 0 is background, shape i is i + 1.
"""

from __future__ import annotations

# Shapes, in layout-class order: SHAPES[i] has layout class id i + 1.
SHAPES: tuple[str, ...] = (
    "circle", "square", "triangle", "diamond", "hexagon", "star", "cross", "heart", "crescent",
)
# Procedural one-off shapes (customization concepts, entities) share one layout class.
NOVEL_SHAPE = "blob"
BACKGROUND_CLASS = 0
NOVEL_CLASS = len(SHAPES) + 1
CLASS_NAMES: tuple[str, ...] = ("background", *SHAPES, NOVEL_SHAPE)

PLURALS: dict[str, str] = {s: s + ("es" if s.endswith("ss") else "s") for s in SHAPES}

# Saturated, nameable colours; the renderer jitters each channel a little.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (240, 215, 35),
    "green": (40, 165, 60),
    "cyan": (40, 200, 215),
    "blue": (40, 80, 220),
    "purple": (135, 55, 195),
    "pink": (245, 120, 190),
    "brown": (125, 75, 35),
}

# Half-size of the object's bounding box as a fraction of the image side; ranges are
# disjoint so "bigger than" is decidable from the size word alone.
SIZES: dict[str, tuple[float, float]] = {
    "small": (0.075, 0.095),
    "medium": (0.12, 0.15),
    "large": (0.19, 0.23),
}
SIZE_ORDER: tuple[str, ...] = ("small", "medium", "large")

TEXTURES: tuple[str, ...] = ("plain", "striped", "checkered", "dotted")
# Patterns reserved for customization concepts so a concept's look is never a base scene's.
NOVEL_TEXTURES: tuple[str, ...] = ("zigzag", "ringed")
TEXTURE_NOUNS: dict[str, str] = {"striped": "stripes", "checkered": "checks", "dotted": "dots"}

BACKGROUND_TONES: tuple[str, ...] = ("light", "dark")

# Canonical relations stored in a scene; the converse is a caption-level paraphrase.
RELATIONS: tuple[str, ...] = ("left_of", "above", "bigger_than", "inside", "overlapping")

COUNT_WORDS: dict[int, str] = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}


def class_id(shape: str) -> int:
    """Layout class id of a shape name (0 background, 1..9 base shapes, 10 novel)."""
    if shape == NOVEL_SHAPE:
        return NOVEL_CLASS
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(CLASS_NAMES[1:])}")
    return SHAPES.index(shape) + 1


def article(word: str) -> str:
    """The indefinite article English puts before `word`."""
    return "an" if word[:1].lower() in "aeiou" else "a"
