"""CodeBench-E: checking generated code in a sandbox (strict, type-exact, or the datasets' own
checks), reference outputs, pass@k, the security scan, runs and reports, and mining problems from
local code. The suites themselves (tasks, prompts, data) are :mod:`smallcode.tasks`."""
