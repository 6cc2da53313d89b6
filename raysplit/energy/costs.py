"""Energy per operation and per memory access (Krouka et al., Tables I and II, from
Horowitz, ISSCC 2014, 45 nm at 0.9 V).

Table I gives one addition and one multiplication per number format; Table II one 64-bit
memory access per memory size. The paper's eq. 2 needs e_m, the energy of fetching *one
element*: here an element of ``b`` bits costs b/64 of a 64-bit access (two float32 weights
per DRAM word), the element width being that of the arithmetic (float32: 32 bits). The
DRAM row is a range (1.3-2.6 nJ); ``dram_pj`` picks the value, 2.6 nJ by default (the
upper end: the paper stresses that DRAM's cost is its I/O's static power).
"""

from __future__ import annotations

from dataclasses import dataclass

PJ = 1e-12

# Table I: (add, mul) in pJ per operation, and the width of the format in bits.
OPERATIONS_PJ: dict[str, tuple[float, float]] = {
    "int8": (0.03, 0.2),
    "float16": (0.4, 1.1),
    "int32": (0.1, 3.1),
    "float32": (0.9, 3.7),
}
FORMAT_BITS = {"int8": 8, "float16": 16, "int32": 32, "float32": 32}
ARITHMETICS = tuple(OPERATIONS_PJ)

# Table II: pJ per 64-bit access. DRAM: 1.3-2.6 nJ (the value is HardwareCosts.dram_pj).
MEMORY_PJ: dict[str, float] = {"8kb": 10.0, "32kb": 20.0, "1mb": 100.0}
DRAM_PJ_RANGE = (1300.0, 2600.0)
MEMORIES = (*MEMORY_PJ, "dram")
ACCESS_BITS = 64


@dataclass(frozen=True)
class HardwareCosts:
    """The client's energy per operation and per fetched element.

    Args:
        arithmetic: the number format the client computes in (a row of Table I); it is
            also the width of a stored weight.
        memory: where the weights are fetched from (a row of Table II): 8kb, 32kb, 1mb
            (caches) or dram.
        dram_pj: pJ per 64-bit DRAM access, within Table II's 1300-2600.
    """

    arithmetic: str = "float32"
    memory: str = "dram"
    dram_pj: float = DRAM_PJ_RANGE[1]

    def __post_init__(self) -> None:
        if self.arithmetic not in OPERATIONS_PJ:
            raise ValueError(f"unknown arithmetic {self.arithmetic!r}; Table I has {', '.join(ARITHMETICS)}")
        if self.memory not in MEMORIES:
            raise ValueError(f"unknown memory {self.memory!r}; Table II has {', '.join(MEMORIES)}")
        lo, hi = DRAM_PJ_RANGE
        if not lo <= self.dram_pj <= hi:
            raise ValueError(f"dram_pj {self.dram_pj} outside Table II's DRAM range {lo:g}-{hi:g} pJ per 64-bit access")

    @property
    def add_j(self) -> float:
        """e_A: joules per addition (comparisons count as additions)."""
        return OPERATIONS_PJ[self.arithmetic][0] * PJ

    @property
    def mul_j(self) -> float:
        """e_M: joules per multiplication."""
        return OPERATIONS_PJ[self.arithmetic][1] * PJ

    @property
    def element_bits(self) -> int:
        return FORMAT_BITS[self.arithmetic]

    @property
    def access_j(self) -> float:
        """Joules per 64-bit access of the chosen memory."""
        return (self.dram_pj if self.memory == "dram" else MEMORY_PJ[self.memory]) * PJ

    @property
    def element_j(self) -> float:
        """e_m of eq. 2: joules to fetch one stored element (b/64 of an access)."""
        return self.access_j * self.element_bits / ACCESS_BITS
