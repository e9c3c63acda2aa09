#!/usr/bin/env python3
"""Write the example catalogue shipped with lancer: recipes (items.csv) and cooks who try them (interactions.csv).

Written for the project, no outside data: 320 recipes from a small grammar (cuisine, dish, main ingredient, a
one-line description) and 400 cooks, each with two favourite cuisines and a taste that drifts from one to the other
over time, so the next recipe depends on the recent ones (what a sequential recommender should learn) and the item
texts carry the signal (cuisine and ingredient words are shared between related recipes). Deterministic:

    python tools/make_example_catalogue.py lancer/examples/recipes
"""
import csv
import sys
from pathlib import Path

import numpy as np

CUISINES = {
    "Italian": (["basil", "parmesan", "tomato", "mushroom", "lemon"], ["risotto", "pasta", "gnocchi", "frittata"]),
    "Mexican": (["black bean", "chipotle", "lime", "corn", "avocado"], ["tacos", "enchiladas", "quesadilla", "pozole"]),
    "Japanese": (["miso", "ginger", "sesame", "shiitake", "seaweed"], ["ramen", "donburi", "udon", "onigiri"]),
    "Indian": (["chickpea", "paneer", "cardamom", "spinach", "lentil"], ["curry", "dal", "biryani", "masala"]),
    "French": (["leek", "gruyere", "thyme", "shallot", "butter"], ["gratin", "tart", "soup", "galette"]),
    "Thai": (["coconut", "lemongrass", "peanut", "chili", "basil"], ["curry", "noodles", "salad", "soup"]),
    "Greek": (["feta", "oregano", "olive", "lemon", "eggplant"], ["pie", "salad", "bake", "wraps"]),
    "Korean": (["kimchi", "gochujang", "tofu", "scallion", "sesame"], ["bibimbap", "pancake", "stew", "noodles"]),
}
MAINS = ["chicken", "salmon", "tofu", "beef", "mushrooms", "prawns", "pork", "vegetables", "eggs", "lamb"]
STYLES = ["quick", "slow-cooked", "weeknight", "spicy", "creamy", "crispy", "smoky", "fresh", "hearty", "light"]


def recipes(rng: np.random.Generator, n: int = 320) -> list[dict]:
    out, seen = [], set()
    cuisines = list(CUISINES)
    while len(out) < n:
        cuisine = cuisines[len(out) % len(cuisines)]
        flavours, dishes = CUISINES[cuisine]
        flavour, dish = rng.choice(flavours), rng.choice(dishes)
        main, style = rng.choice(MAINS), rng.choice(STYLES)
        name = f"{flavour.title()} {main.title()} {dish.title()}"
        if name in seen: continue
        seen.add(name)
        minutes = int(rng.integers(2, 13)) * 5
        out.append({"item_id": f"R{len(out) + 1:03d}", "name": name, "cuisine": cuisine,
                    "description": f"A {style} {cuisine.lower()} {dish} with {main} and {flavour}, ready in {minutes} minutes."})
    return out


def interactions(rng: np.random.Generator, items: list[dict], n_users: int = 400) -> list[dict]:
    by_cuisine = {c: [i for i, r in enumerate(items) if r["cuisine"] == c] for c in CUISINES}
    rows, t0 = [], 1_700_000_000
    for u in range(n_users):
        first, second = rng.choice(list(CUISINES), 2, replace=False)
        length, t = int(rng.integers(6, 31)), t0 + int(rng.integers(0, 86_400 * 30))
        done, last = set(), None
        for k in range(length):
            drift = k / max(1, length - 1)                                  # taste moves from `first` to `second`
            cuisine = second if rng.random() < drift else first
            if rng.random() < 0.1: cuisine = rng.choice(list(CUISINES))     # now and then something else
            pool = [i for i in by_cuisine[cuisine] if i not in done]
            if last is not None and rng.random() < 0.5:                     # often the same main ingredient again
                same = [i for i in pool if items[i]["name"].split()[-2] == items[last]["name"].split()[-2]]
                pool = same or pool
            if not pool: continue
            i = int(rng.choice(pool)); done.add(i); last = i
            t += int(rng.integers(3_600, 86_400 * 4))
            rows.append({"user_id": f"cook{u + 1:03d}", "item_id": items[i]["item_id"], "timestamp": t})
    return rows


def write(folder: Path) -> None:
    rng = np.random.default_rng(2026)
    items = recipes(rng)
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("items.csv", items), ("interactions.csv", interactions(rng, items))):
        with open(folder / name, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0])); w.writeheader(); w.writerows(rows)


if __name__ == "__main__":
    if len(sys.argv) != 2: sys.exit(__doc__)
    write(Path(sys.argv[1]))
