"""Help texts of the options `optllm run` and `optllm plan` share: one wording, one meaning."""

BUDGET = ("Spend at most this many USD on the assigned queries: the most accurate plan within it, kept only when it "
          "reliably beats the best plan without a predictor (see --safe).")
TARGET = ("Reach this TRUE accuracy (0-1) with --confidence: the cheapest plan whose lower confidence bound reaches "
          "it, tested from the most accurate plan down. When none is certified there is no plan (exit code 1) and "
          "the output says how many labels might do.")
CONFIDENCE = "Confidence of every bound: a target plan reaches the target, a safe budget plan beats the reference."
FOLDS = ("Cross-fitting folds of the labelled sample: each labelled query is predicted by a predictor fitted "
         "without it, and those held-out errors correct and bound every plan's accuracy (0: Bernoulli variance only).")
SAFE = ("With --budget: leave the best plan without a predictor (the best affordable single LLM, or a random mix of "
        "two that spends the budget) only for a plan that beats it at --confidence (--no-safe: the most accurate "
        "predicted plan within budget, as the paper does).")
PREDICTOR = "Correctness predictor (default: the selector; see `optllm predict-eval --help`)."
BOUND = ("How the labelled sample bounds a plan's accuracy: `labelled` (every labelled query, predicted by "
         "cross-fitting and routed as the plan routes it; an exact binomial bound), `holdout` (the predictor is fitted "
         "on the training labels alone and the plans are bounded by their answers on the validation labels, routed "
         "by each plan's own rule; an exact binomial bound on fewer labels, with no fold-versus-final-predictor gap) "
         "or `ppi` (predicted accuracy plus the held-out residual; narrower, and it under-covered in `optllm "
         "coverage`). Which holds where: docs/bounds.md.")
SEED = "Seed of every random choice (split, predictor, cross-fitting, the reference mix)."
NEITHER = "With neither --budget nor --target-accuracy: the knee of the predicted front."
