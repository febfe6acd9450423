"""Reports over evaluated runs, without training: `inputs` (score files, run directories, normalisers) ->
`statistics` (per-agent aggregates, the ranked leaderboard, the regression guard) -> `render` (tables, CSV,
JSON, report.html, atomic output) and `plots` (matplotlib); `transfer` (multi-task vs experts, the transfer
matrix's arithmetic). Imports go down that list; nothing here imports the trainer, runtime, actor or learner.
The binaries are impala_tf.leaderboard and impala_tf.transfer."""
