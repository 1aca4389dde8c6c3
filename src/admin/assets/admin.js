// graph-mailer admin page: comfort only. Every action works without this script.
"use strict";

// Copy buttons: <button data-copy="id-of-input">, hidden until the script can copy.
for (const button of document.querySelectorAll("button[data-copy]")) {
  const input = document.getElementById(button.dataset.copy);
  if (!input || !navigator.clipboard) continue;
  button.hidden = false;
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(input.value);
      button.textContent = "Copied";
    } catch {
      input.select();
      button.textContent = "Press Ctrl+C";
    }
  });
}

// A mailbox whose sign-in link is out: show its state as it changes, without a reload.
for (const element of document.querySelectorAll("[data-watch-mailbox]")) {
  const url = "/admin/mailbox-state?mailbox=" + encodeURIComponent(element.dataset.watchMailbox);
  const poll = async () => {
    try {
      const response = await fetch(url, { credentials: "same-origin", cache: "no-store" });
      if (response.ok) {
        const { state, connected_at } = await response.json();
        // Connected by this link, not by an earlier sign-in.
        if (state === "CONNECTED" && connected_at >= Number(element.dataset.since)) {
          element.textContent = "CONNECTED";
          element.className = "ok";
          return;
        }
      }
    } catch {
      // The service may be restarting; keep asking.
    }
    setTimeout(poll, 1500);
  };
  poll();
}
