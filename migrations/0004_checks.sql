-- Version 4: the CHECK constraints of the two busiest tables compare in place.
--
-- SQLite evaluates `x IN ('a', 'b', 'c')` (three or more constants) by building a temporary
-- b-tree of the list, and a CHECK constraint does that on every insert and update of the row:
-- measurably slower for instances and deliveries, which are written for every step. The OR form
-- means the same. Only the text changes, so it is edited in place, which is SQLite's documented
-- way to change a CHECK constraint without rebuilding the table
-- (https://www.sqlite.org/lang_altertable.html#otheralter); the schema version is bumped by the
-- migration runner.
PRAGMA writable_schema = ON;
UPDATE sqlite_schema
SET sql = replace(sql,
    'CHECK (state IN (''active'', ''completed'', ''exited'', ''archived''))',
    'CHECK (state = ''active'' OR state = ''completed'' OR state = ''exited'' OR state = ''archived'')')
WHERE type = 'table' AND name = 'instances';
UPDATE sqlite_schema
SET sql = replace(sql,
    'CHECK (status IN (''pending'', ''succeeded'', ''failed''))',
    'CHECK (status = ''pending'' OR status = ''succeeded'' OR status = ''failed'')')
WHERE type = 'table' AND name = 'deliveries';
PRAGMA writable_schema = OFF;
