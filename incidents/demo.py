"""Hooks that let the other apps add their part to `seed_demo`'s story without incidents importing them.

The apps register from their AppConfig.ready(); seed_demo calls them at two points:
- before_close(incident=, author=, responders=, at=): just before a demo incident is closed (a
  required review must be published first, say);
- after_incidents(incidents=, people=, services=, now=): once, after all demo incidents exist
  (updates, subscribers, action items).
"""

_steps = {"before_close": [], "after_incidents": []}


def demo_step_register(when, step):
    if step not in _steps[when]:
        _steps[when].append(step)


def demo_steps_run(when, **kwargs):
    for step in _steps[when]:
        step(**kwargs)
