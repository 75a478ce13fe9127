"""Synthetic typists for tests that need typing without the recorded data sets."""

from __future__ import annotations

import numpy as np

from authsvc.keystroke.events import KeyEvent, Sample, make_sample

PASSWORD = "s3cret-pw"
LETTERS = "etaoinshrdlucmfwypvbgk "


class Typist:
    """A synthetic person: own mean log hold per key and log DD per digraph, plus day-to-day noise."""

    def __init__(self, rng: np.random.Generator, noise: float = 0.15) -> None:
        self.rng = rng
        self.noise = noise
        self.hold = {k: rng.normal(-2.45, 0.3) for k in LETTERS + PASSWORD + "0123456789"}
        self.dd: dict[tuple[str, str], float] = {}

    def _dd(self, a: str, b: str) -> float:
        if (a, b) not in self.dd:
            self.dd[(a, b)] = self.rng.normal(-1.6, 0.4)
        return self.dd[(a, b)]

    def events(self, text: str) -> list[KeyEvent]:
        t, out = 0.0, []
        for i, ch in enumerate(text):
            if i:
                t += float(np.exp(self._dd(text[i - 1], ch) + self.rng.normal(0, self.noise)))
            hold = float(np.exp(self.hold[ch] + self.rng.normal(0, self.noise)))
            out.append(KeyEvent(ch, t, t + hold))
        return out

    def password(self) -> Sample:
        return make_sample(self.events(PASSWORD), "fixed", PASSWORD)

    def free(self, n: int) -> Sample:
        return make_sample(self.events("".join(self.rng.choice(list(LETTERS), n))), "free")
