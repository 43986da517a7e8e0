// Berth console: copy buttons. Every page works without this script; it
// only turns buttons with data-copy into "copy to clipboard".
"use strict";
document.addEventListener("click", function (ev) {
  var b = ev.target.closest("button[data-copy]");
  if (!b) return;
  var text = b.getAttribute("data-copy");
  var done = function (ok) {
    var was = b.textContent;
    b.textContent = ok ? "Copied" : "Press Ctrl+C";
    b.setAttribute("aria-live", "polite");
    setTimeout(function () { b.textContent = was; }, 1500);
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(function () { done(true); }, function () { done(false); });
  } else {
    // Plain HTTP: select the command's text so that the user can copy it.
    var target = document.getElementById(b.getAttribute("aria-controls"));
    if (target) {
      var range = document.createRange();
      range.selectNodeContents(target);
      var sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      try { done(document.execCommand("copy")); } catch (e) { done(false); }
    } else {
      done(false);
    }
  }
});
