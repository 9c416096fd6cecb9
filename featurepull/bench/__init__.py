"""Load-test tooling: a lean DynamoDB endpoint serving one synthetic Feast-layout table
(:mod:`featurepull.bench.endpoint`), fast enough that a benchmark measures the client."""
