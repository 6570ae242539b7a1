// Short messages in a corner: errors from the server, failed actions. Text only, never HTML.

const SHOW_MS = 5000;
const MAX_TOASTS = 3;

export class Toasts {
  constructor(container) {
    this.container = container;
  }

  show(message, kind = "error") {
    const toast = document.createElement("div");
    toast.className = `toast toast-${kind}`;
    toast.setAttribute("role", kind === "error" ? "alert" : "status");
    toast.textContent = String(message);
    this.container.append(toast);
    while (this.container.children.length > MAX_TOASTS) this.container.firstElementChild.remove();
    setTimeout(() => toast.remove(), SHOW_MS);
  }

  error(message) {
    this.show(message, "error");
  }

  info(message) {
    this.show(message, "info");
  }
}
