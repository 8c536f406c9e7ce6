"""A/B analysis over the prediction log: is a variant better than the baseline (`champion`)?

Reads one experiment from the `predictions` and `feedback` tables (serving/predictions.py)
and reports, per variant: traffic, feedback coverage, accuracy with its Wilson 95% interval,
p50/p99 scoring latency; then, for each other variant against the baseline, the difference in
accuracy with its 95% interval, a test of it, and a recommendation (promote, keep, or how many
more labelled predictions are needed to see the minimum detectable effect).

Two designs, chosen per variant from how it got its traffic:

- **Paired**: the variant scored the baseline's requests in shadow (`shadow_of` = the primary
  prediction, whose feedback judges both). On the labelled requests: McNemar's exact test,
  and Newcombe's paired interval of the difference. Only the requests on which the two models
  disagree carry information, so far fewer labels are needed.
- **Independent**: the variants split the traffic. Newcombe's interval of the difference and
  the pooled two-proportion z-test.

Both are fixed-horizon tests: valid when the sample size was fixed in advance and the result
is read once. Operators read this report every day, and a fixed-horizon p-value checked at 20
looks is below 0.05 in about a quarter of A/A experiments. The recommendation therefore uses,
by default, the mixture sequential probability ratio test (mSPRT), whose always-valid p-value
may be read after every new label (`statistics.msprt_p_values`), over the labels in the order
they arrived; its finding has the direction the difference had when it crossed; and a change
of model version starts a new experiment (`log.current_versions`).

The statistics come from statsmodels and scipy; the mSPRT, which neither offers, is the closed
form of the paper it cites, on numpy, and its error rate is checked by simulation in the tests.

`sentiment ab report` is `log.read_log` (the experiment as arrays), then `analysis.analyse`
(the `Report`, each comparison's action from `decision.decide`), then `report.print_report`
(or the report's JSON). Import each name from the
module that defines it; this package re-exports nothing.
"""
