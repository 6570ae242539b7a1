// The access-token form: a small modal dialog, shown once for any number of waiting requests.

export class TokenForm {
  constructor(dialog) {
    this.dialog = dialog;
    this.form = dialog.querySelector("form");
    this.input = dialog.querySelector("input[name=token]");
    this.message = dialog.querySelector(".token-message");
    this.cancelButton = dialog.querySelector("[data-action=cancel]");
    this.pending = null;
    this.resolve = null;

    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.finish(this.input.value.trim() || null);
    });
    this.cancelButton.addEventListener("click", () => this.finish(null));
    // Escape closes a modal dialog: treat it as cancel.
    this.dialog.addEventListener("cancel", (event) => {
      event.preventDefault();
      this.finish(null);
    });
  }

  // Resolves with the token typed in, or null when the user cancels.
  ask(reason) {
    if (this.pending) return this.pending;
    this.message.textContent = reason;
    this.input.value = "";
    this.pending = new Promise((resolve) => {
      this.resolve = resolve;
    });
    if (typeof this.dialog.showModal === "function") this.dialog.showModal();
    else this.dialog.setAttribute("open", "");
    this.input.focus();
    return this.pending;
  }

  finish(token) {
    if (!this.resolve) return;
    const resolve = this.resolve;
    this.resolve = null;
    this.pending = null;
    if (typeof this.dialog.close === "function" && this.dialog.open) this.dialog.close();
    else this.dialog.removeAttribute("open");
    resolve(token);
  }
}
