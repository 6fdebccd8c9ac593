// complete_lesson({ lesson_id, score }): records that the caller completed a
// lesson. Idempotent: the lesson is the key, so a retried or repeated call
// changes nothing and says so.

export default async ({ lesson_id, score }, ctx) => {
  const { data, error } = await ctx.db
    .from('lesson_progress')
    .upsert({ lesson_id, score }, { onConflict: 'user_id,lesson_id', ignoreDuplicates: true })
    .select('lesson_id, score, completed_at');
  if (error) throw new Error(error.message);
  if (data.length === 1) return { ...data[0], recorded: true };
  const { data: earlier } = await ctx.db
    .from('lesson_progress')
    .select('lesson_id, score, completed_at')
    .eq('lesson_id', lesson_id)
    .single();
  return { ...earlier, recorded: false };
};
