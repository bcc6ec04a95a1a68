"""`kdq_tf search`: find the most accurate student that fits a device budget.

The data flow, cheapest step first:

    space.toml -> space.SearchSpace -> space.Candidate (sampled by Optuna)
      -> space.estimate: weights and activations; over budget -> rejected before training
      -> trial.run_trial: distill on cached teacher logits (pruned by ASHA on val accuracy),
         QAT, full-int8 convert, LUT, arena by bisection, the real Cortex-M image under QEMU
      -> budget.Budget.misses: the measured flash, RAM and instructions against the budget
      -> front.pareto / front.markdown: the trials that fit, and the chosen one

`engine.run_search` ties them to an Optuna study kept in a journal file in the search folder.
"""
