"""Level 6: applications on top of evaluation and strategies: the OpenAI-compatible server,
recipes, the HTML report, benchmarks, and training the value probe."""
