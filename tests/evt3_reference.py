"""A word-by-word EVT 3.0 decoder written the way upstream's ``evt3::Decoder::doDecode`` reads the stream (one
``switch`` per word), for checking the vectorised decoder on word streams the recordings do not contain (vectors,
roll-overs, packets cut inside a word). Slow on purpose: it is the plain reading of the format.

It keeps the two documented differences from upstream (a byte cut off at a packet end is carried, a TIME_HIGH seen
in an earlier packet counts for the first valid time) and skips unknown codes instead of throwing.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SequentialEvt3:
    width: int
    height: int
    high: int = 0
    low: int = 0
    valid: bool = False
    high_seen: bool = False
    row: int = 0
    base_x: int = 0
    polarity: int = 0
    carry: bytes = b""
    cd: list[tuple[int, int, int, int]] = field(default_factory=list)  # (t_ns, x, y, polarity)
    triggers: list[tuple[int, int, int]] = field(default_factory=list)  # (t_ns, edge, id)
    unknown: int = 0

    def _high(self, value: int) -> None:
        last = (self.high >> 12) & 0xFFF
        if value < last and last - value > 10:
            self.high += 1 << 24
        self.high = (self.high & ~((1 << 24) - 1)) | (value << 12)

    def _event(self, x: int, polarity: int) -> None:
        if x < self.width and self.row < self.height:
            self.cd.append(((self.high | self.low) * 1000, x, self.row, polarity))

    def feed(self, data: bytes) -> None:
        data = self.carry + bytes(data)
        whole = len(data) - len(data) % 2
        self.carry = data[whole:]
        for index in range(0, whole, 2):
            word = data[index] | (data[index + 1] << 8)
            code, payload = word >> 12, word & 0xFFF
            if not self.valid:  # upstream's findValidTime: only time words until a TIME_HIGH then a TIME_LOW
                if code == 0x8:
                    self._high(payload)
                    self.high_seen = True
                elif code == 0x6:
                    self.low = payload
                    self.valid = self.high_seen
                continue
            if code == 0x2:
                self._event(payload & 0x7FF, payload >> 11)
            elif code == 0x0:
                self.row = payload & 0x7FF
            elif code == 0x6:
                self.low = payload
            elif code == 0x8:
                self._high(payload)
            elif code == 0x3:
                self.base_x, self.polarity = payload & 0x7FF, payload >> 11
            elif code in (0x4, 0x5):
                bits = 12 if code == 0x4 else 8
                for bit in range(bits):
                    if payload & (1 << bit):
                        self._event((self.base_x + bit) & 0xFFFF, self.polarity)
                self.base_x = (self.base_x + bits) & 0xFFFF
            elif code == 0xA:
                self.triggers.append(((self.high | self.low) * 1000, payload & 1, (payload >> 8) & 0xF))
            elif code in (0x1, 0xB, 0xC, 0xD):
                self.unknown += 1
