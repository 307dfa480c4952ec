"""The Qt-free session model: what the app holds (slide, annotations, classes, model, settings, selection, the
open project) and the events it emits. The Qt widgets in `ui/` only subscribe and call its methods; a script or a
server can do the same. Projects (a study's slides in one folder) live in `manifest`."""
from gigapath_desktop.project.events import Emitter
from gigapath_desktop.project.history import History
from gigapath_desktop.project.manifest import Project
from gigapath_desktop.project.session import SavedSession, Session
from gigapath_desktop.project.settings import TrainingChoice

__all__ = ["Emitter", "History", "Project", "SavedSession", "Session", "TrainingChoice"]
