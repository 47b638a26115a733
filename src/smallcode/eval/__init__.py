"""CodeBench-E: suites of code tasks, a sandbox that runs generated programs, pass@k and reports."""
