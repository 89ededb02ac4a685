"""The texts the accuracy corpus (``bench.corpus``) is spoken from: original plain English prose.

Written to be scored by word error rate without false errors: no digits and no number words
(Whisper writes "twenty" as "20" as often as not), no abbreviations, no names, few words that may
be written as one word or two, and American spelling, which the model writes whatever the accent.
Sentences end with a full stop, so ``sentences`` splits them without a parser.
"""

from __future__ import annotations

import re

#: Spoken by every voice at every speed, and under noise: the same words, so conditions compare.
PASSAGE = (
    "The kettle was already warm when she came down the stairs. "
    "Outside, the street was quiet except for a truck that delivered bread to the corner shop. "
    "She poured the tea, opened the window, and listened to the birds in the garden. "
    "Her brother had promised to fix the gate before the weekend, but the gate still leaned against the wall. "
    "She wrote a short note for him and left it on the table next to his keys. "
    "Then she picked up her bag and walked down the hill to catch the early train."
)

#: The long-form clip, paragraph by paragraph (a pause of a few seconds between paragraphs).
LONG_FORM = (
    "Every morning the market opens a little before the sun is fully up. "
    "The first traders arrive with vans full of crates, and they build their stalls from folding tables "
    "and old canvas. "
    "By the time the shoppers come, the air smells of coffee, wet cardboard and fresh oranges. "
    "Some people walk slowly and look at everything, while others know exactly what they want and leave "
    "within minutes.",

    "The man who sells cheese has worked at the same spot for most of his life. "
    "He remembers which customers like a mild flavor and which ones want something sharp enough to make "
    "their eyes water. "
    "He cuts a small piece for anyone who hesitates, and he rarely lets a person leave without buying "
    "something. "
    "When business is slow, he reads the newspaper and argues with the woman at the next stall about the "
    "weather.",

    "Rain changes the whole mood of the town. "
    "On a dry afternoon the park is full of children, dogs and people eating lunch on the grass. "
    "As soon as the clouds turn dark, everyone hurries toward the cafes and the covered arcade near the "
    "station. "
    "The windows steam up, the tables fill, and strangers end up sharing umbrellas and stories. "
    "When the rain stops, the streets shine, and the smell of wet stone rises from the pavement.",

    "Learning to ride a bicycle is mostly about trusting your own balance. "
    "At the start, the handlebars feel stiff and the pedals seem to push back against your feet. "
    "A patient friend holds the seat and runs beside you, promising not to let go. "
    "Then, without warning, you notice that the friend is far behind and waving, and you are riding alone. "
    "The fear disappears almost at once, and it is replaced by a feeling of quiet pride.",

    "The library on the hill is an old building with tall windows and creaking floors. "
    "Inside, the light is soft and the only sounds are turning pages and the hum of the heating pipes. "
    "Students sit at the long tables with their laptops, while older readers prefer the armchairs by the "
    "fireplace. "
    "The librarian knows where every book should be, even when someone has put it back on the wrong shelf. "
    "She says that a quiet room is the best place to think about a difficult problem.",

    "Cooking soup for a large family is a lesson in patience. "
    "You chop onions, carrots and celery, and you let them soften slowly in butter until the kitchen smells "
    "sweet. "
    "Then you add the stock, the potatoes and a handful of herbs from the windowsill. "
    "The pot should simmer gently, because boiling makes the vegetables fall apart. "
    "While it cooks, someone always comes in to taste it, and someone always says it needs more salt.",

    "Our neighbors have a large brown dog that believes the whole street belongs to him. "
    "He sits by their front door every afternoon and watches the people walking past. "
    "He barks at the postman, but he wags his tail for the children coming home from school. "
    "When it snows, he rolls in the fresh snow and then shakes himself dry right next to anyone who is "
    "standing nearby. "
    "Nobody can stay angry with him for long.",

    "The bus that goes to the coast leaves from the square in front of the town hall. "
    "It is usually crowded with students, workers and tourists carrying heavy bags. "
    "The driver knows most of the regular passengers and greets them by nodding as they climb aboard. "
    "The road follows the river for a while and then climbs over the hills, where the view opens up across "
    "the fields. "
    "On a clear day you can see the sea long before you reach it.",

    "Repairing an old chair takes more care than building a new chair. "
    "First you have to take it apart without breaking the joints that are still sound. "
    "Then you scrape away the old glue, which has turned hard and brittle over the years. "
    "Fresh glue, a few clamps and a night of waiting are usually enough to make the frame strong again. "
    "A light coat of oil brings back the warm shine of the wood, and the chair is ready for another "
    "lifetime.",

    "Gardening teaches people to plan ahead and to accept what they cannot control. "
    "Seeds planted in the spring may not show anything for weeks, and then they seem to grow overnight. "
    "Slugs eat the lettuce, birds steal the berries, and a late frost can ruin the beans. "
    "Yet every summer there is a moment when the tomatoes turn red and the beds are full of flowers. "
    "In that moment, all the hard work seems worth it.",

    "Writing a letter by hand has become unusual, which makes it feel special. "
    "You choose the paper, find a pen that does not smudge, and think carefully about each sentence. "
    "There is no way to delete a mistake without leaving a mark, so you slow down and say what you mean. "
    "The person who receives the letter can hold it, read it again later, and keep it in a drawer. "
    "Many families still have letters that their grandparents wrote long ago.",

    "The swimming pool opens early for people who want to exercise before work. "
    "The water is cold at first, and the lifeguard sits in a high chair with a cup of coffee. "
    "Swimmers follow their lanes up and down, counting lengths in their heads. "
    "Some of them are fast and splash a lot, while others move slowly and steadily. "
    "After an hour, the pool fills with families and noise, and the quiet early swimmers are already on "
    "their way to the office.",

    "Moving to a new house is exhausting even when everything goes well. "
    "Boxes pile up in every room, and nobody can remember which box holds the kettle. "
    "The furniture that looked fine in the old house suddenly seems too large or too small. "
    "For the first few nights, every sound is strange, and it is hard to fall asleep. "
    "Slowly the rooms start to feel familiar, and the new house becomes home.",

    "A good teacher notices when a student is confused before the student says anything. "
    "She might explain the same idea in a different way, or draw a simple picture on the board. "
    "She asks questions that help the class find the answer instead of simply giving it to them. "
    "When a shy student finally speaks up, she listens carefully and treats the answer with respect. "
    "Years later, people often remember the kindness of a teacher more than the lessons themselves.",

    "The old clock in the hallway has not kept the right time for as long as anyone can remember. "
    "It runs fast in the summer and slow in the winter, as if it had moods of its own. "
    "Visitors check their phones when they hear it chime, and then they laugh. "
    "Several times the family has talked about replacing it, but nobody really wants to. "
    "The sound of its ticking is part of the house, like the creak of the stairs and the rattle of the "
    "windows.",

    "Baking bread at home is simple, but it cannot be rushed. "
    "Flour, water, salt and yeast are mixed into a sticky dough that slowly becomes smooth as you knead it. "
    "The dough rests in a warm place under a cloth until it has doubled in size. "
    "Then it is shaped, left to rise again, and baked in a very hot oven. "
    "The smell of fresh bread spreads through the whole house and brings everyone into the kitchen.",

    "Walking in the forest after a storm is both calm and a little strange. "
    "Broken branches lie across the path, and the ground is soft and covered with leaves. "
    "The streams are louder than usual, and water drips from every tree. "
    "Birds that were silent during the storm begin to sing again, each in turn. "
    "The air feels clean and cool, and the light through the branches looks almost silver.",

    "Fixing a flat tire on the side of the road is a skill that everyone should learn. "
    "You need a safe place to stop, a jack, a wrench and a spare wheel that actually has air in it. "
    "The nuts are often tight, so it helps to loosen them before lifting the car. "
    "Once the spare is on, you tighten the nuts in a crossing pattern so that the wheel sits evenly. "
    "Then you drive carefully to a garage and have the damaged tire repaired.",

    "Evenings in the village are quiet once the shops have closed. "
    "People sit on benches outside their houses and talk about the day while the swallows circle overhead. "
    "Somewhere a radio is playing, and a child is practicing the piano with the window open. "
    "As it gets dark, the lights come on in the kitchens, and the smell of dinner drifts along the lane. "
    "Later, the only sounds are an owl in the trees and the distant rumble of a train.",

    "The hardware store on the main street sells almost everything a household might need. "
    "Nails are kept in wooden drawers, and the owner weighs them on an old brass scale. "
    "If you describe a problem with a leaking tap or a stuck window, he listens, nods and walks straight "
    "to the right shelf. "
    "He often explains how to do the repair yourself, even though it means you will buy less. "
    "People trust him because he would rather lose a sale than sell something useless.",

    "Long journeys by train give people time they do not usually have. "
    "Some passengers work on their laptops, some sleep, and some simply watch the landscape pass by. "
    "Small stations appear and vanish, and the fields change from green to gold as the train moves south. "
    "Conversations start between strangers who will never meet again, and they are often surprisingly "
    "honest. "
    "When the train finally arrives, everyone gathers their bags and hurries away without looking back.",

    "Before going to sleep, she likes to read for a while in bed. "
    "She prefers long novels with many characters, because she enjoys living in another world for a few "
    "weeks. "
    "Sometimes she falls asleep with the book open on her chest and the lamp still on. "
    "In the morning she can never remember exactly where she stopped, so she reads the last page again. "
    "It is a small habit, but it makes the end of every day feel peaceful.",
)


def sentences(text: str) -> list[str]:
    """``text`` cut after each full stop, question or exclamation mark (the texts here have no abbreviations)."""
    return [part for part in re.split(r"(?<=[.?!])\s+", text.strip()) if part]


def words(text: str) -> int:
    return len(text.split())
