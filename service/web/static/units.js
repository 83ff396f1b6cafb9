// What the pages say about a unit's labels: expert or automatic, this bundle or an earlier one.

/** Annotations made under the loaded bundle (older servers send only those, without the flag). */
export function currentAnnotations(annotations) {
  return (annotations || []).filter((a) => a.current_bundle !== false);
}

export function expertAnnotations(annotations) {
  return currentAnnotations(annotations).filter((a) => a.source === "expert");
}

/** "expert", "automatic" or "none": who has labelled the unit under the loaded bundle. */
export function status(annotations) {
  const current = currentAnnotations(annotations);
  if (current.some((a) => a.source === "expert")) return "expert";
  return current.length ? "automatic" : "none";
}

export const STATUS_TEXT = { expert: "expert label", automatic: "automatic label only", none: "unlabelled" };

/** The annotations that describe the unit best: expert ones when there are any, else automatic ones. */
export function bestAnnotations(annotations) {
  const experts = expertAnnotations(annotations);
  return experts.length ? experts : currentAnnotations(annotations);
}

/** The unit's label(s) as one line, e.g. "Spiculation / Irregular mass"; "" when unlabelled.
 * Answers "not recognisable" name nothing, so they give no label; "not recognisable" when they are all there is. */
export function labelText(annotations) {
  const best = bestAnnotations(annotations);
  const named = best.filter((a) => a.recognizable !== false && a.label);
  if (!named.length && best.length) return "not recognisable";
  return [...new Set(named.map((a) => a.label))].join(" / ");
}

/** The BI-RADS category most of the best annotations give, or "" when unlabelled. */
export function mainCategory(annotations) {
  const counts = new Map();
  for (const a of bestAnnotations(annotations)) counts.set(a.category, (counts.get(a.category) || 0) + 1);
  let best = "";
  let most = 0;
  for (const [category, n] of counts) if (n > most) [best, most] = [category, n];
  return best;
}

/** Progress over ranked units: how many carry an expert label, and how many of those are the given annotator's. */
export function progress(units, annotator) {
  let labelled = 0;
  let mine = 0;
  for (const unit of units) {
    const experts = expertAnnotations(unit.annotations);
    if (experts.length) labelled++;
    if (annotator && experts.some((a) => a.annotator === annotator)) mine++;
  }
  return { labelled, mine, total: units.length };
}
