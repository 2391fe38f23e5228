"""KeyDoor: a tiny multi-turn text world. Find the key, open the locked door, reach the goal.

Why: the smallest env where credit assignment over many turns matters. `rooms` sets the size of
the map and so the optimal path length (3 actions at rooms=2, 5 at rooms=3, about 40 on average
at rooms=27), and the reward is 1.0 only on reaching the goal. All text is short for a character-level policy:

    Take key, open door, reach goal.
    R7: exits e,w. key here.
    > take
    got key. R7: exits e,w.
    > e
    ...

Observations end with the "> " cue and stay within `MAX_OBS_CHARS`; actions are one of
`ACTIONS` followed by "\\n". A bad or useless action gets a short observation and costs a turn.

A layout is a random spanning tree of `rooms` grid cells (grown depth-first-ish, so paths are
long) with one tree edge locked; the goal is behind it, the key on the start side. Key, start and
goal sit far apart so the optimal path grows with `rooms`. Room labels are random numbers and
part of the layout. Layouts are a pure function of (rooms, seed, split, index); train and test
are disjoint by `split_of` on the layout's canonical key (geometry, labels and placements), so
for rooms=2 (four geometries) test layouts differ from train ones only by labels.
"""

from __future__ import annotations

import random
import re
from collections import deque
from dataclasses import dataclass, replace

from clicker.tasks.base import Split, Step, split_of

DIRS: dict[str, tuple[int, int]] = {"n": (0, 1), "s": (0, -1), "e": (1, 0), "w": (-1, 0)}
OPPOSITE = {"n": "s", "s": "n", "e": "w", "w": "e"}
ACTIONS: tuple[str, ...] = ("n", "s", "e", "w", "take", "open")
ALIASES = {"north": "n", "south": "s", "east": "e", "west": "w"}
GOAL_LINE = "Take key, open door, reach goal.\n"
CUE = "\n> "
MAX_OBS_CHARS = 50
NEWEST_BIAS = 0.9  # growing-tree: how often to extend the newest room (long corridors)
EXPERT_EPS = 0.4  # warm-up expert's share of random actions
MAX_ATTEMPTS = 10_000


@dataclass(frozen=True)
class Layout:
    """One map. Rooms are 0..n-1; `exits[i]` maps a direction to the neighbouring room."""

    labels: tuple[int, ...]
    exits: tuple[dict[str, int], ...]
    start: int
    key: int
    door_room: int  # the room on the start side of the locked door
    door_dir: str  # the exit of `door_room` the door is on
    goal: int
    canonical: str  # split key

    def path(self, src: int, dst: int) -> list[str]:
        """Directions along the (unique, tree) path from `src` to `dst`, ignoring the lock."""
        parent: dict[int, tuple[int, str]] = {}
        seen, todo = {dst}, deque([dst])
        while todo:
            r = todo.popleft()
            for d, nb in self.exits[r].items():
                if nb not in seen:
                    seen.add(nb)
                    parent[nb] = (r, OPPOSITE[d])  # from nb, go OPPOSITE[d] to reach r
                    todo.append(nb)
        steps, r = [], src
        while r != dst:
            r, d = parent[r]
            steps.append(d)
        return steps


def _farthest(dist: dict[int, int], within: set[int], rng: random.Random) -> int:
    best = max(dist[r] for r in within)
    return rng.choice(sorted(r for r in within if dist[r] == best))


def _distances(exits: list[dict[str, int]], src: int, blocked: tuple[int, int]) -> dict[int, int]:
    dist, todo = {src: 0}, deque([src])
    while todo:
        r = todo.popleft()
        for nb in exits[r].values():
            if nb not in dist and {r, nb} != set(blocked):
                dist[nb] = dist[r] + 1
                todo.append(nb)
    return dist


def generate_layout(rooms: int, rng: random.Random) -> Layout:
    """A random layout with `rooms` rooms (see the module docstring)."""
    cells, where, active = [(0, 0)], {(0, 0): 0}, [0]
    exits: list[dict[str, int]] = [{}]
    while len(cells) < rooms:
        k = len(active) - 1 if rng.random() < NEWEST_BIAS else rng.randrange(len(active))
        i = active[k]
        x, y = cells[i]
        free = [(d, (x + dx, y + dy)) for d, (dx, dy) in DIRS.items() if (x + dx, y + dy) not in where]
        if not free:
            active.pop(k)
            continue
        d, c = rng.choice(free)
        j = len(cells)
        cells.append(c)
        where[c] = j
        exits.append({OPPOSITE[d]: i})
        exits[i][d] = j
        active.append(j)
    edges = sorted((i, j) for i in range(rooms) for j in exits[i].values() if i < j)
    a, b = rng.choice(edges)
    side_a = set(_distances(exits, a, (a, b)))
    side_b = set(range(rooms)) - side_a
    if len(side_b) > len(side_a) or (len(side_a) == len(side_b) and rng.random() < 0.5):
        a, b, side_a, side_b = b, a, side_b, side_a
    door_dir = next(d for d, nb in exits[a].items() if nb == b)
    goal = _farthest(_distances(exits, b, (a, b)), side_b, rng)
    key = _farthest(_distances(exits, a, (a, b)), side_a, rng)
    start = _farthest(_distances(exits, key, (a, b)), side_a, rng)
    labels = tuple(rng.sample(range(10 if rooms <= 10 else 100), rooms))
    x0, y0 = min(x for x, _ in cells), min(y for _, y in cells)
    pos = [f"{x - x0},{y - y0}" for x, y in cells]
    canonical = "keydoor|" + ";".join(
        sorted(f"{pos[i]}={labels[i]}:{''.join(sorted(exits[i]))}" for i in range(rooms))
    )
    canonical += f"|s{pos[start]}|k{pos[key]}|d{pos[a]}{door_dir}|g{pos[goal]}"
    return Layout(labels, tuple(exits), start, key, a, door_dir, goal, canonical)


def parse_action(action: str) -> str | None:
    """The canonical action for `action` text, or None if it is not one."""
    a = action.strip().lower()
    a = ALIASES.get(a, a)
    return a if a in ACTIONS else None


ROTATE = {"n": "e", "e": "s", "s": "w", "w": "n"}  # a quarter turn clockwise
FLIP = {"n": "n", "s": "s", "e": "w", "w": "e"}  # a mirror through the n-s axis
WORDS = {v: k for k, v in ALIASES.items()}
_OBS_DIRS = re.compile(r"(exits |door |no exit )([nsew](?:,[nsew])*)(?=[ .])")
_LABEL = re.compile(r"R(\d+)")


@dataclass(frozen=True)
class KeyDoorSymmetry:
    """A renaming of keydoor's world that changes no rule: one of the 8 rotations and
    reflections of the compass, and a permutation of the room labels. Applied to a transcript
    (`__call__`), it gives the transcript of the same play in the renamed layout (`layout`): a
    world model trained on renamed transcripts (`dream.wm_augment`) must learn the rules (a move
    through an open door reaches the goal) rather than the names of the rooms and exits they
    happened to be seen with."""

    dirs: dict[str, str]
    labels: dict[int, int]

    def __call__(self, text: str) -> str:
        """The renamed text of a transcript, or of part of one that starts with an
        observation: every part after a "\\n> " cue is an action up to its newline (renamed
        when it is a move), the rest observation text (exits, doors and room labels renamed)."""
        parts = text.split(CUE)
        out = [self._observation(parts[0])]
        for part in parts[1:]:
            action, nl, obs = part.partition("\n")
            out.append(self._action(action) + nl + self._observation(obs))
        return CUE.join(out)

    def _observation(self, text: str) -> str:
        text = _OBS_DIRS.sub(lambda m: m.group(1) + ",".join(
            sorted((self.dirs[d] for d in m.group(2).split(",")), key=list(DIRS).index)), text)
        return _LABEL.sub(lambda m: f"R{self.labels.get(int(m.group(1)), int(m.group(1)))}", text)

    def _action(self, action: str) -> str:
        core = action.strip()
        a = ALIASES.get(core.lower(), core.lower())
        if a not in DIRS:
            return action
        new = self.dirs[a] if len(core) == 1 else WORDS[self.dirs[a]]
        return action.replace(core, new.upper() if core.isupper() else new, 1)

    def layout(self, lay: Layout) -> Layout:
        """The renamed layout (same rooms, start, key, door and goal; its canonical key marks
        it renamed)."""
        return replace(lay, labels=tuple(self.labels[x] for x in lay.labels),
                       exits=tuple({self.dirs[d]: nb for d, nb in ex.items()} for ex in lay.exits),
                       door_dir=self.dirs[lay.door_dir], canonical=lay.canonical + "|renamed")


class KeyDoorEnv:
    """One episode in one layout. Ends on reaching the goal or after `max_turns` actions."""

    def __init__(self, layout: Layout, max_turns: int):
        self.layout, self.max_turns = layout, max_turns
        self.reset()

    def reset(self) -> str:
        self.room, self.has_key, self.door_open = self.layout.start, False, False
        self.turns, self.done = 0, False
        return GOAL_LINE + self.describe() + CUE

    def describe(self) -> str:
        lay, r = self.layout, self.room
        text = f"R{lay.labels[r]}: exits {','.join(d for d in DIRS if d in lay.exits[r])}."
        if r == lay.key and not self.has_key:
            text += " key here."
        if r == lay.door_room:
            text += f" door {lay.door_dir} {'open' if self.door_open else 'locked'}."
        return text

    def _act(self, a: str | None, raw: str) -> tuple[str, float, str]:
        lay, r = self.layout, self.room
        if a is None:
            return "bad action.", 0.0, f"bad action {raw.strip()[:20]!r}"
        if a in DIRS:
            nb = lay.exits[r].get(a)
            if nb is None:
                return f"no exit {a}.", 0.0, f"no exit {a}"
            if r == lay.door_room and a == lay.door_dir and not self.door_open:
                return "door locked.", 0.0, "door is locked"
            self.room = nb
            if nb == lay.goal:
                self.done = True
                return "", 1.0, "reached the goal"
            return self.describe(), 0.0, f"moved {a} to R{lay.labels[nb]}"
        if a == "take":
            if r == lay.key and not self.has_key:
                self.has_key = True
                return "got key. " + self.describe(), 0.0, "took the key"
            return "no key here.", 0.0, "no key here"
        if r != lay.door_room:
            return "no door here.", 0.0, "no door here"
        if self.door_open:
            return "door already open.", 0.0, "door already open"
        if not self.has_key:
            return "need key.", 0.0, "need the key to open the door"
        self.door_open = True
        return "door opened. " + self.describe(), 0.0, "opened the door"

    def step(self, action: str) -> Step:
        if self.done:
            raise RuntimeError("step() after the episode ended; call reset()")
        self.turns += 1
        text, reward, feedback = self._act(parse_action(action), action)
        if not self.done and self.turns >= self.max_turns:
            self.done, text = True, ""
            feedback += "; out of turns"
        return Step(text + CUE if text else "", reward, self.done, feedback)

    def expert_action(self) -> str:
        """The optimal next action from the current state."""
        lay = self.layout
        if not self.has_key:
            target, here = lay.key, "take"
        elif not self.door_open:
            target, here = lay.door_room, "open"
        else:
            target, here = lay.goal, ""
        return lay.path(self.room, target)[0] if self.room != target else here


class KeyDoor:
    """The KeyDoor World. max_turns=None: each layout allows 2*optimal+4 actions, and
    `self.max_turns` is the bound 4*rooms+2 on that; an int fixes the limit for all layouts."""

    name = "keydoor"
    stop: tuple[str, ...] = ("\n",)
    max_action_tokens = 8

    def __init__(self, rooms: int = 3, max_turns: int | None = None, seed: int = 0):
        if not 2 <= rooms <= 100:
            raise ValueError(f"rooms must be in 2..100, got {rooms}")
        if max_turns is not None and max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {max_turns}")
        self.rooms, self.seed, self.turn_limit = rooms, seed, max_turns
        self.max_turns = max_turns if max_turns is not None else 4 * rooms + 2

    def layout(self, split: Split, index: int) -> Layout:
        for attempt in range(MAX_ATTEMPTS):
            rng = random.Random(f"keydoor/{self.rooms}/{self.seed}/{split}/{index}/{attempt}")
            lay = generate_layout(self.rooms, rng)
            if split_of(lay.canonical) == split:
                return lay
        raise RuntimeError(f"no {split} keydoor layout found for rooms={self.rooms}")

    def _env(self, lay: Layout) -> KeyDoorEnv:
        if self.turn_limit is not None:
            return KeyDoorEnv(lay, self.turn_limit)
        return KeyDoorEnv(lay, 2 * len(_expert_run(lay)) + 4)

    def make(self, split: Split, index: int) -> KeyDoorEnv:
        return self._env(self.layout(split, index))

    def symmetry(self, rng: random.Random) -> KeyDoorSymmetry:
        """A random renaming of the world (see `KeyDoorSymmetry`): a world model's training
        transcripts under it are as real as the originals (`dream.wm_augment`)."""
        turns, flip = rng.randrange(4), rng.random() < 0.5
        dirs = {}
        for d in DIRS:
            x = FLIP[d] if flip else d
            for _ in range(turns):
                x = ROTATE[x]
            dirs[d] = x
        pool = list(range(10 if self.rooms <= 10 else 100))
        return KeyDoorSymmetry(dirs, dict(zip(pool, rng.sample(pool, len(pool)))))

    def optimal_actions(self, split: Split, index: int) -> list[str]:
        return _expert_run(self.layout(split, index))

    def reference(self, split: Split, index: int) -> str:
        return " ".join(self.optimal_actions(split, index))

    def warmup_text(self, index: int, rng: random.Random) -> str:
        """A transcript of an expert that acts randomly with probability EXPERT_EPS."""
        env = self.make("train", index)
        text = env.reset()
        while not env.done:
            a = rng.choice(ACTIONS) if rng.random() < EXPERT_EPS else env.expert_action()
            text += a + "\n" + env.step(a + "\n").observation
        return text


def _expert_run(lay: Layout) -> list[str]:
    """The optimal action sequence: the expert's actions from the start until the goal."""
    env = KeyDoorEnv(lay, max_turns=10**6)
    actions: list[str] = []
    while not env.done:
        actions.append(env.expert_action())
        env.step(actions[-1] + "\n")
    return actions
