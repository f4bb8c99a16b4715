"""Level 2: what a task is. Datasets and problem selection; the math domain (answer
extraction, equivalence, grading) and the code domain (programs, the judge, the sandbox);
the default prompts, and cutting solutions into steps."""
