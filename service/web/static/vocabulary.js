// One vocabulary of labels (Lu & Perer): a label input offers the labels units already carry, with their
// BI-RADS category, as suggestions (a <datalist>, so a new label can still be typed). Choosing a
// suggestion also chooses its category, so a group reuses both rather than a near-duplicate.

import { getJSON } from "./api.js";
import { el } from "./session.js";

/** The datalist of `input`, filled from GET /units/labels; returns a function that re-reads the labels. */
export function offerLabels(input, categorySelect) {
  const list = el("datalist", { id: `${input.id}-suggestions` });
  input.after(list);
  input.setAttribute("list", list.id);
  input.setAttribute("autocomplete", "off");
  let terms = [];

  const load = async () => {
    terms = (await getJSON("/units/labels")).labels;
    list.replaceChildren(
      ...terms.map((t) =>
        el("option", { value: t.label, label: `${t.category} · ${t.unit_ids.length} unit${t.unit_ids.length === 1 ? "" : "s"}` }),
      ),
    );
  };
  // A label typed or chosen that is in the vocabulary takes the category it is used with.
  input.addEventListener("input", () => {
    const term = terms.find((t) => t.label === input.value.trim());
    if (term && categorySelect.value !== term.category) {
      categorySelect.value = term.category;
      categorySelect.dispatchEvent(new Event("change", { bubbles: true }));
    }
  });
  return load;
}
