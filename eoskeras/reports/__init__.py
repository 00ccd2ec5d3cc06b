"""Reports: plots and terminal rendering from run-directory files alone.

Modules (imported on demand; none but ``live`` loads TensorFlow or Keras):

- ``rundata``    load a run directory into typed data (``load_run``, ``ReportError``)
- ``sweepdata``  load a learning-rate sweep directory (``load_sweep``)
- ``plots``      PNG plots of a run or a sweep (``plot_run``, ``plot_sweep``)
- ``terminal``   rich reports (``render_run``, ``render_sweep``) and ``run_summary``
- ``live``       ``RichProgress``, the live display during ``model.fit``
- ``formatting`` value-or-marker text shared by the reports ("—", "diverged")
"""
