"""Level 2: what a task is. Datasets and problem selection, the math domain (answer
extraction, equivalence, grading), the default prompt, and cutting solutions into steps."""
