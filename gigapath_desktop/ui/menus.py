"""The window's menus and tool bar: every action with its shortcut in its tooltip, the class and brush-size
choosers, undo / redo bound to the session's history, View entries that bring closed panels back, and Help."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from PySide6.QtGui import QAction, QActionGroup, QColor, QKeySequence, QPixmap
from PySide6.QtWidgets import QComboBox, QLabel, QMenu, QSpinBox

from gigapath_desktop.ui.dialogs import ShortcutsDialog, show_about
from gigapath_desktop.ui.viewer import BRUSH_SIZES, Tool

if TYPE_CHECKING:
    from gigapath_desktop.ui.main_window import MainWindow

TOOLS = ((Tool.PAN, "H", "Pan: drag to move the view"), (Tool.SELECT, "S", "Select: click or drag a box; drag to move"),
         (Tool.RECTANGLE, "R", "Rectangle: a Train region (set Validation in the Annotations list)"),
         (Tool.POLYGON, "P", "Polygon: click the corners, Enter or double-click to close"),
         (Tool.BRUSH, "B", "Brush: paint a label ([ and ] change the size)"),
         (Tool.ERASER, "E", "Eraser: rub out labels ([ and ] change the size)"))


@dataclass
class Menus:
    recent: QMenu
    class_box: QComboBox
    brush_size: QSpinBox
    undo: QAction
    redo: QAction
    tool_actions: dict[Tool, QAction] = field(default_factory=dict)
    actions: list[QAction] = field(default_factory=list)


def build_menus(w: "MainWindow") -> Menus:
    actions: list[QAction] = []

    def action(menu: Any, text: str, slot: Callable[[], Any], shortcut: Any = None, tip: str = "") -> QAction:
        act = QAction(text, w)
        act.triggered.connect(lambda _=False: slot())
        if shortcut is not None:
            act.setShortcut(QKeySequence(shortcut))
        act.setToolTip(f"{tip or text.rstrip('…')} ({act.shortcut().toString()})" if shortcut is not None else tip or text)
        menu.addAction(act)
        actions.append(act)
        return act

    file = w.menuBar().addMenu("&File")
    action(file, "Open slide…", w.open_slide_dialog, QKeySequence.StandardKey.Open)
    recent = file.addMenu("Open recent")
    action(file, "Open session…", lambda: w.with_folder("Open session", w.open_session))
    action(file, "Save session…", lambda: w.with_folder("Save session in folder", w.save_session, w.save_start()),
           QKeySequence.StandardKey.Save)
    file.addSeparator()
    action(file, "New project…", w.projects.create_dialog)
    action(file, "Open project…", w.projects.open_dialog)
    action(file, "Add slides to project…", w.projects.add_dialog)
    action(file, "Relink project slides…", w.projects.relink_dialog)
    file.addSeparator()
    action(file, "Import GeoJSON…", w.import_dialog)
    action(file, "Export GeoJSON…", w.export_geojson_dialog)
    action(file, "Open run…", w.open_run_dialog)
    action(file, "Export mask…", w.export_mask_dialog)
    action(file, "Export model…", w.export_model_dialog)
    file.addSeparator()
    action(file, "Quit", w.close, QKeySequence.StandardKey.Quit)

    history = w.session.history
    edit = w.menuBar().addMenu("&Edit")
    undo = action(edit, "Undo", history.undo, QKeySequence.StandardKey.Undo)
    redo = action(edit, "Redo", history.redo, QKeySequence.StandardKey.Redo)

    def show_history() -> None:
        undo.setEnabled(history.undo_text is not None)
        redo.setEnabled(history.redo_text is not None)
        undo.setText(f"Undo {history.undo_text or ''}".strip())
        redo.setText(f"Redo {history.redo_text or ''}".strip())

    history.changed.connect(show_history)
    show_history()
    action(edit, "Delete selected", lambda: w.session.delete(w.session.selected()), QKeySequence.StandardKey.Delete)
    action(edit, "New class…", w.new_class_dialog)
    action(edit, "Class colour…", w.class_colour_dialog)
    action(edit, "Rename class…", w.rename_class_dialog)
    action(edit, "Remove class", w.remove_class)
    action(edit, "Smaller brush", lambda: w.viewer.set_brush_size(round(w.viewer.brush_pixels / 1.25)), "[")
    action(edit, "Larger brush", lambda: w.viewer.set_brush_size(round(w.viewer.brush_pixels * 1.25) + 1), "]")

    view = w.menuBar().addMenu("&View")
    action(view, "Fit to window", w.viewer.fit, "Ctrl+0")
    action(view, "1:1", w.viewer.one_to_one, "Ctrl+1")
    view.addSeparator()
    for dock in w.docks:
        view.addAction(dock.toggleViewAction())

    tools = w.addToolBar("Tools")
    tools.setObjectName("tools")
    view.addAction(tools.toggleViewAction())
    group = QActionGroup(w)
    menus = Menus(recent, QComboBox(toolTip="Class of new labels"), QSpinBox(minimum=BRUSH_SIZES[0],
                  maximum=BRUSH_SIZES[1], value=w.viewer.brush_pixels, suffix=" px", toolTip="Brush size ([ and ])"),
                  undo, redo)
    for tool, key, tip in TOOLS:
        act = QAction(tool.value.capitalize(), w, checkable=True, shortcut=QKeySequence(key), toolTip=f"{tip} ({key})")
        act.triggered.connect(lambda _=False, t=tool: w.viewer.set_tool(t))
        group.addAction(act)
        tools.addAction(act)
        menus.tool_actions[tool] = act
        actions.append(act)
    menus.tool_actions[Tool.PAN].setChecked(True)
    tools.addSeparator()
    tools.addWidget(QLabel(" Class "))
    tools.addWidget(menus.class_box)
    tools.addWidget(QLabel(" Brush "))
    tools.addWidget(menus.brush_size)
    menus.brush_size.valueChanged.connect(w.viewer.set_brush_size)
    w.viewer.brush_changed.connect(menus.brush_size.setValue)
    tools.addSeparator()
    tools.addActions([undo, redo])
    tools_menu = w.menuBar().addMenu("&Tools")
    tools.addAction(action(tools_menu, "Detect tissue", w.detect_tissue, "Ctrl+D",
                           "Outline the tissue automatically (labels)"))
    resolution = action(tools_menu, "Slide resolution…", w.slide_mpp_dialog,
                        tip="Give a project slide its µm per pixel (for a file that records none, or a wrong one)")

    def offer_resolution(_: object = None) -> None:  # (a project slide keeps one; other slides: --slide-mpp)
        resolution.setEnabled(w.session.on_project_slide())

    for event in (w.session.events.slide, w.session.events.project):
        event.connect(offer_resolution)
    offer_resolution()

    help_menu = w.menuBar().addMenu("&Help")
    action(help_menu, "Keyboard shortcuts", lambda: ShortcutsDialog(w, actions).exec(), QKeySequence.StandardKey.HelpContents)
    action(help_menu, "About GigaPath Desktop", lambda: show_about(w))
    menus.actions = actions
    return menus


def fill_classes(box: QComboBox, classes: list) -> None:
    box.blockSignals(True)
    current = box.currentText()
    box.clear()
    for cls in classes:
        swatch = QPixmap(12, 12)
        swatch.fill(QColor(*cls.color))
        box.addItem(swatch, cls.name)
    box.setCurrentIndex(max(box.findText(current), 0))
    box.blockSignals(False)
