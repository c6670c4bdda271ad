//! The device picker of the launch form and the interactive sampler: `cpu`, and `cuda:0` to
//! `cuda:3` in a build with `--features cuda`.

use eframe::egui;

/// A labelled combo box choosing `device` (`cpu` or `cuda:N`); `salt` keeps its id apart from
/// other pickers.
pub fn device_picker_ui(ui: &mut egui::Ui, label: &str, salt: &str, device: &mut String) {
    let label = ui.label(label);
    egui::ComboBox::from_id_salt(salt)
        .selected_text(device.clone())
        .show_ui(ui, |ui| {
            ui.selectable_value(device, "cpu".to_string(), "cpu");
            if cfg!(feature = "cuda") {
                for i in 0..4 {
                    ui.selectable_value(device, format!("cuda:{i}"), format!("cuda:{i}"));
                }
            }
        })
        .response
        .labelled_by(label.id);
}
