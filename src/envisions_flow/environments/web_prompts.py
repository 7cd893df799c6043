"""What the web policy is told: the Synapse-style program API, its one-shot example, the refinement and
next-turn prompts, and the step-mode instruction and example of the agent methods."""

from __future__ import annotations

# The agent API (Synapse's, which the paper's agents were written against) and what the interpreter accepts.
_API = (
    "agent.click_xpath(xpath) (clicks every visible element the xpath matches, in page order), agent.type(text) "
    "(into the focused element), agent.press(key) (enter, space, tab, backspace, arrowup, arrowdown, arrowleft, "
    "arrowright, home, end, command+a, command+c, command+v), agent.click_option(xpath) (selects the first "
    "matching <option> of a <select>) and agent.movemouse(xpath) (moves the mouse over the matches). Visible "
    "elements carry a data-wob_ref attribute you can use in xpaths."
)
INSTRUCTION = (
    "Complete the web task by writing a short Python program that controls the browser through `agent`: "
    + _API + " Besides agent calls, only assignments, arithmetic, string and f-string expressions, comparisons, "
    "`if`/`elif`/`else`, conditional expressions, `for` loops over range(n) or a list, and str(), int(), float(), "
    "len(), abs(), min(), max(), round() are allowed. Reply with one ```python code block."
)

# One worked example for the cold-start prompt: enter-text, seed 7, as `observe` renders it.
ONE_SHOT = (
    'Instruction: Enter "Ignacio" into the text field and press Submit.\n'
    'HTML: <div id="wrap" data-wob_ref="2"> <div id="query">Enter "<span class="bold">Ignacio</span>" into the '
    'text field and press Submit.</div> <div id="area" data-wob_ref="3"> <div id="form" '
    'style="margin-left:10px;margin-top:18px;" data-wob_ref="4"> <input type="text" id="tt" data-wob_ref="5" '
    'value=""> <button id="subbtn" class="secondary-action" style="margin-top:6px;" data-wob_ref="6">Submit</button>'
    ' </div> </div> </div>',
    '# focus the text field, type the name, submit\n'
    'agent.click_xpath("//input[@id=\'tt\']")\nagent.type("Ignacio")\nagent.click_xpath("//button[@id=\'subbtn\']")',
)

REFINE_TEMPLATE = (
    "You are provided with a program that controls the browser to solve the given web task. You can either "
    "repair and refine it, or simply return the original program. Reply with one ```python code block that "
    "calls `agent`.\n\nThe task is:\n{question}\n\n"
    "The current program is:\n```python\n{program}\n```\n\nThe solution program is:"
)

# Step mode (agents.py, the IPR and synthetic-mixture runs): one agent call per step, the page after each.
STEP_INSTRUCTION = (
    "Complete the web task one action at a time. Reply with 'Thought: <reasoning>' and then 'Action: <one call>', "
    "where the call is one of " + _API.replace(" and agent.movemouse", " or agent.movemouse")
    + " After each action you see the page."
)

# The step-mode worked episode (few-shot): ONE_SHOT's task in three steps, with the pages it shows.
STEP_EXAMPLE_STEPS = (
    ("The name goes into the text field, so I focus it first.", "agent.click_xpath(\"//input[@id='tt']\")",
     ONE_SHOT[0]),
    ("The field is focused; I type the name.", 'agent.type("Ignacio")', ONE_SHOT[0]),
    ("The field holds the name; I press Submit.", "agent.click_xpath(\"//button[@id='subbtn']\")",
     ONE_SHOT[0].replace('value=""', 'value="Ignacio"')),
)

NEXT_TURN = ("The program ran and the task is not finished yet. The page now shows:\n{observation}\n\n"
             "Write the next program, continuing from this page. Reply with one ```python code block.")
