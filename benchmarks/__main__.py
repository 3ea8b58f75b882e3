"""Run every benchmark module (`python -m benchmarks [NAME ...]`), e.g. `python -m benchmarks kernel_mixing`."""
import importlib
import pkgutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import benchmarks  # noqa: E402

wanted = set(sys.argv[1:])
found = sorted(i.name for i in pkgutil.iter_modules(benchmarks.__path__) if i.name.startswith("bench_"))
if wanted:
    unknown = wanted - {n[len("bench_"):] for n in found}
    if unknown:
        sys.exit(f"error: unknown benchmark {sorted(unknown)[0]!r}; valid: {', '.join(n[6:] for n in found)}")
for name in found:
    if wanted and name[len("bench_"):] not in wanted:
        continue
    print(f"\n=== {name}", flush=True)
    importlib.import_module(f"benchmarks.{name}").main()
if not found:
    print("no benchmarks yet")
