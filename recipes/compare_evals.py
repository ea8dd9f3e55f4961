"""Compare two sets of eval runs of one list row by row: is the change more than seed noise?

    python recipes/compare_evals.py --baseline runs/eval_a_s0 runs/eval_a_s1 --candidate runs/eval_b_s0 runs/eval_b_s1

Each run is an `evaluate.py --out` folder or its results JSON file (as in benchmarks/results).
"""

import sys

from tts.evaluation.compare import main

if __name__ == "__main__":
    sys.exit(main())
