"""What building left free in the C heap goes back to the system once a service's engines are
built (`clausewatch.service.return_free_memory`)."""

from __future__ import annotations

import subprocess
import sys

# In a process of its own: 256 MiB of 4 KiB objects (each a block of the C heap, below the
# size glibc maps on its own), all but the newest freed, which keeps the heap from shrinking
# by itself; the resident memory before and after giving the free memory back.
PROGRAM = """
from clausewatch.service import return_free_memory

def resident_kib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))

blocks = [bytes(4096) for _ in range(65536)]
newest = blocks[-1]
del blocks
before = resident_kib()
return_free_memory()
print(before, resident_kib())
"""


def test_the_free_memory_of_the_c_heap_is_given_back() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, check=True, timeout=60
    )
    before, after = map(int, done.stdout.split())
    assert before - after > 200 * 1024, (before, after)
