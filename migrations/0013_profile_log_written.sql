-- Version 13: the rows of `profile_log` for a new event or instance are written by the statements
-- that write the event or the instance, not by triggers. An INSERT that fires a trigger writes two
-- rows and may fail after the first, so SQLite gave each such statement a statement journal: a
-- copy of every page it was about to change, and, at its end, a walk along the transaction's
-- in-memory sub-journal, which grows with every job of a batch (issue 15: filling a new database
-- ran 20-30 % slower than before the log). The triggers that delete a row with its event or
-- instance, and move it with a merged instance, stay: those statements change many rows anyway.
DROP TRIGGER events_logged;
DROP TRIGGER instances_logged;
