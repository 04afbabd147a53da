"""Rule governance on the rule files themselves (not the compiled engine), so an auditor can compare any
two releases, even ones today's engine could no longer load: manifest and signing (`manifest`), release
diffs (`diff`), source attributes (`attributes`), and their commands (`cli`)."""
