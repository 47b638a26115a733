"""``smallcode agent``: an offline, test-driven coding agent working on a sandboxed copy of a repository.

``workspace.py`` makes the copy, runs commands in bubblewrap and produces the final diff;
``actions.py`` parses the one action of each reply and applies search/replace edits;
``models.py`` holds the chat models (a local checkpoint, an endpoint, a script); ``loop.py`` runs
the turns, writes and replays trajectories and samples candidates. The repair benchmark that
measures it is :mod:`smallcode.eval.agent_bench`. See ``docs/agent.md``.
"""

from smallcode.agent.loop import AgentConfig, AgentResult, replay, run_agent, run_candidates
from smallcode.agent.models import ChatModel, EndpointChat, EngineChat, ScriptedModel, open_chat_model
from smallcode.agent.workspace import ShellLimits, Workspace, WorkspaceError

__all__ = ["AgentConfig", "AgentResult", "ChatModel", "EndpointChat", "EngineChat", "ScriptedModel",
           "ShellLimits", "Workspace", "WorkspaceError", "open_chat_model", "replay", "run_agent", "run_candidates"]
