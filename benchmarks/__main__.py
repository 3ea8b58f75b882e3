"""Run every benchmark module (`python -m benchmarks [--quick] [NAME ...]`), e.g. `python -m benchmarks kernel_mixing`.

`--quick` is passed to the benchmarks whose `main` takes it (fewer rounds, no detail tables).
"""
import importlib
import inspect
import pkgutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import benchmarks  # noqa: E402

args = sys.argv[1:]
quick = "--quick" in args
wanted = {a for a in args if a != "--quick"}
bad = sorted(a for a in wanted if a.startswith("-"))
if bad:
    sys.exit(f"error: unknown option {bad[0]!r}; valid: --quick")
found = sorted(i.name for i in pkgutil.iter_modules(benchmarks.__path__) if i.name.startswith("bench_"))
if wanted:
    unknown = wanted - {n[len("bench_"):] for n in found}
    if unknown:
        sys.exit(f"error: unknown benchmark {sorted(unknown)[0]!r}; valid: {', '.join(n[6:] for n in found)}")
for name in found:
    if wanted and name[len("bench_"):] not in wanted:
        continue
    print(f"\n=== {name}", flush=True)
    main = importlib.import_module(f"benchmarks.{name}").main
    main(quick=True) if quick and "quick" in inspect.signature(main).parameters else main()
if not found:
    print("no benchmarks yet")
