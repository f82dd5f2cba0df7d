"""`backlitfix watch`: a watch-folder daemon that corrects each photo landing in a folder, once.

Modules: `scope` (which paths are inputs), `stability` (when a file is complete), `journal` (the
SQLite record that survives restarts), `tempfiles` (clean-up after a kill), `decide` (every
decision, one pure function of the facts about a file), `daemon` (threads that gather the facts
and carry out the decisions: events, queue and worker), `command` (the click command; imported by
`backlitfix.cli`, so import that first rather than `backlitfix.watch.command` on its own).
"""
